"""The broker's own cost per request, in process: the ASGI app driven directly (no server, no sockets).

Run by hand: ``.venv/bin/python bench/asgi_profile.py [--route read|up|write|resolved] [--n 5000]
[--profile OUT.pstats]``. A subprocess broker (bench/http_read.py's helpers) prepares an embedded
SQLite data directory with project `microblog`; then the app is built in this process from the same
settings and `n` requests are sent straight into it, `--concurrency` at a time, after a warm-up. It prints the CPU
time per request (process time, so a loaded machine moves it less than a wall-clock rate); with
``--profile`` the timed loop runs under cProfile and the top functions by own time are printed.

``--stages`` (the read): the CPU time of each step of the read's unit of work, per request. The unit runs
inside the SQLite writer without ever suspending, so the thread CPU time between a step's entry and exit
is that step's own (the request's other parts, which do suspend, are the total minus the unit). Each
step is timed by wrapping the function where its caller looks it up; nested steps are indented.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import importlib
import inspect
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_read

# The read's steps: (label, module, attribute looked up by the caller). Indented labels run inside the
# one above. A step the tree lacks is left out (so another checkout's tree can be timed the same way).
STAGES = [
    ("unit of work", "broker.db.units", "drive"),
    ("  token + secret statement", "broker.repositories.secrets", "read_with_token"),
    ("  token decision", "broker.services.secrets", "authenticate_in"),
    ("  binding check", "broker.services.secrets", "served_as"),
    ("  decrypt", "broker.services.secrets", "open_local"),
    ("  value fingerprint", "broker.services.audit", "saw_value"),
    ("  audit event", "broker.services.audit", "record_in"),
    ("    event shape", "broker.services.audit.writing", "shape"),
    ("    chain head", "broker.repositories.audit", "head_of"),
    ("    event hash", "broker.services.audit.writing", "link_hash"),
    ("    event hash", "broker.services.audit.writing", "record_hash"),  # before link_hash
    ("    event + key rows insert", "broker.repositories.audit", "append"),
]


def _time_stages() -> dict[str, float]:
    """Wrap each step of STAGES to add its thread CPU time to the returned totals (seconds)."""
    spent: dict[str, float] = {}

    def wrap(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    spent[label] = spent.get(label, 0.0) + time.thread_time() - t0

            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.thread_time() - t0

        return timed

    for label, module, attr in STAGES:
        mod = importlib.import_module(module)
        if hasattr(mod, attr):
            setattr(mod, attr, wrap(label, getattr(mod, attr)))
    return spent


async def _drive(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _run(
    route: str, n: int, token: str, admin: str, profile: str | None, concurrency: int, stages: bool
) -> None:
    from broker.config import get_settings
    from broker.main import build_runtime, create_app

    spent = _time_stages() if stages else None

    app = create_app(build_runtime(get_settings()))
    base = f"/v1/projects/{http_read.PROJECT}/environments/{http_read.ENV}"
    auth = [(b"host", b"127.0.0.1"), (b"user-agent", b"strongroom-bench")]
    body = b""
    if route == "up":
        scope = _scope("GET", "/up", auth)
    elif route == "read":
        scope = _scope("GET", http_read.READ_PATH, [*auth, (b"authorization", f"Bearer {token}".encode())])
    elif route == "resolved":
        scope = _scope("GET", base + "/resolved", [*auth, (b"authorization", f"Bearer {admin}".encode())])
    else:
        body = json.dumps({"value": "x" * 64}).encode()
        scope = _scope(
            "PUT",
            base + "/secrets/WRITTEN",
            [
                *auth,
                (b"authorization", f"Bearer {admin}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        )
    lifespan_q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await lifespan_q.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def ls_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_q.get, ls_send))
    await started.wait()
    for _ in range(200):
        status = await _drive(app, scope, body)
        if status != 200:
            sys.exit(f"{route}: status {status}")
    prof = cProfile.Profile() if profile else None
    if spent is not None:
        spent.clear()
    c0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    left = n
    statuses: dict[int, int] = {}

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await _drive(app, scope, body)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(
        f"{route}: {n} requests, cpu {cpu / n * 1e3:.3f} ms/request, wall {wall / n * 1e3:.3f} ms/request,"
        f" statuses {dict(sorted(statuses.items()))}"
    )
    if spent is not None:
        for label in dict.fromkeys(label for label, _, _ in STAGES):
            print(f"  {label:<30} {spent.get(label, 0.0) / n * 1e3:.3f} ms/request")
    if prof and profile:
        prof.dump_stats(profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
    await lifespan_q.put({"type": "lifespan.shutdown"})
    await life


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", choices=["read", "up", "write", "resolved"], default="read")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--profile", metavar="OUT")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--resolved-values", type=int, default=50)
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="on a throwaway durable PostgreSQL cluster instead of SQLite",
    )
    parser.add_argument("--stages", action="store_true", help="CPU time of each step of the read's unit")
    args = parser.parse_args()
    if args.stages and args.route != "read":
        parser.error("--stages: only for --route read")
    with contextlib.ExitStack() as stack:
        url = None
        if args.postgresql:
            sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: the tree measured
            from tests.support import pg

            cluster = stack.enter_context(pg.cluster(durable=True))
            cluster.psql("CREATE DATABASE bench")
            url = cluster.url("bench").replace("postgresql+asyncpg://", "postgresql://")
        _prepare_and_run(
            args, stack.enter_context(tempfile.TemporaryDirectory(prefix="strongroom-asgi-")), url
        )


def _prepare_and_run(args: argparse.Namespace, tmp: str, url: str | None) -> None:
    """Prepare the data with a subprocess broker, then drive the app in this process."""
    proc, port, data_dir = http_read.start_broker(Path(tmp), url)
    try:
        token = http_read.prepare(port, data_dir)
        import httpx

        admin_secret = (data_dir / "bootstrap-admin.secret").read_text().strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = c.post("/v1/auth/token", json={"client_id": "admin", "client_secret": admin_secret})
            admin = r.json()["token"]
            if args.route == "resolved":
                base = f"/v1/projects/{http_read.PROJECT}/environments/{http_read.ENV}/secrets"
                for i in range(args.resolved_values - 1):
                    c.put(
                        f"{base}/KEY_{i}",
                        json={"value": f"v{i}" * 8},
                        headers={"Authorization": f"Bearer {admin}"},
                    ).raise_for_status()
    finally:
        proc.terminate()
        proc.wait()
    for k in [k for k in os.environ if k.startswith("STRONGROOM_")]:
        del os.environ[k]
    os.environ["STRONGROOM_DATA_DIR"] = str(data_dir)
    if url is not None:
        os.environ["STRONGROOM_DATABASE_URL"] = url
        os.environ["STRONGROOM_KEY_FILE"] = str(Path(tmp) / "keyring.json")
    asyncio.run(_run(args.route, args.n, token, admin, args.profile, args.concurrency, args.stages))


if __name__ == "__main__":
    main()
