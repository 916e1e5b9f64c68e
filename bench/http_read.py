"""HTTP read throughput: reading one secret vs a bare route, through a real uvicorn broker.

Run by hand: ``.venv/bin/python bench/http_read.py`` (embedded SQLite in a temporary data directory),
or ``.venv/bin/python bench/http_read.py --postgres postgresql://user@127.0.0.1:5432/emptydb`` (the
database must be empty or migrated without principals: the bench migrates it and bootstraps the admin).

PostgreSQL's own settings move the figure: a cluster with fsync or synchronous_commit off (as the test
suite's throwaway clusters run) commits the read's audit events without waiting for the disk; quote
figures from a durable cluster (the defaults).

The broker runs in a subprocess (`strongroom-server serve`, one worker, loopback, a free port). The bench
creates project `microblog` with environments `common` and `production`, a 100-byte secret, and a
read-only child token scoped to `microblog/production`. Then it drives 32 concurrent keep-alive
connections against (a) ``GET /up`` (no database, no audit) and (b) ``GET .../secrets/DATABASE_URL``
with the token (token check, one read, decrypt, audit append), alternating a and b over a few repeats,
each bounded by a request count and a time cap. It prints requests/s, p50 and p99 per run, the best
run of each, and the ratio b/a of the best runs; the target is b/a >= 0.30 (exit status 1 below it).

Load generator: `wrk` when installed (``apt-get install wrk``), bounded by time only (``--wrk-seconds``,
since wrk cannot stop at a count and still report a true rate); the token goes to it in a 0600 Lua
file, never on argv. Otherwise a raw-socket asyncio HTTP/1.1 client in a separate process (httpx would
itself be the bottleneck on the bare route). The CPU use of the server and of the load generator is
printed too: a load generator near 100% of a core means the figure is the client's, not the broker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TARGET = 0.30
CONNECTIONS = 32  # --connections changes it
PROJECT, ENV, NAME = "microblog", "production", "DATABASE_URL"
READ_PATH = f"/v1/projects/{PROJECT}/environments/{ENV}/secrets/{NAME}"


@dataclass
class Run:
    """One load run's figures."""

    label: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float
    client_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.label:<12} {self.rps:>9.0f} req/s  p50 {self.p50_ms:>7.2f} ms  p99 {self.p99_ms:>7.2f} ms"
            f"  n={self.requests:<6} errors={self.errors:<3} server cpu {self.server_cpu:>4.0%}"
            f"  client cpu {self.client_cpu:>4.0%}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Load generators


WRK_SCRIPT = """
wrk.method = "{method}"
wrk.path = "{path}"
{headers}
{cycle}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

# Several (path, body) targets: each request takes the next one, round robin per wrk thread.
WRK_CYCLE = """
local targets = {{{targets}}}
local i = 0
request = function()
  i = i % #targets + 1
  return wrk.format(nil, targets[i][1], nil, targets[i][2])
end
"""


def _lua(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    token: str | None,
    cap: float,
    workdir: Path,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    targets: list[tuple[str, str]] | None = None,
    threads: int = 2,
    scheme: str = "http",
) -> dict[str, Any]:
    """wrk runs for the whole -d duration (it cannot stop at a count and still report a true rate).

    `targets`: (path, body) pairs sent in turn instead of `path` alone; `headers` go with every request;
    `scheme` https for a TLS listener (wrk does not check the certificate).
    """
    script = workdir / "bench.lua"
    every = dict(headers or {})
    if token:
        every["Authorization"] = f"Bearer {token}"
    lines = "\n".join(f"wrk.headers[ {_lua(k)} ] = {_lua(v)}" for k, v in every.items())
    cycle = ""
    if targets:
        cycle = WRK_CYCLE.format(targets=", ".join(f"{{ {_lua(p)}, {_lua(b)} }}" for p, b in targets))
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(WRK_SCRIPT.format(method=method, path=path, headers=lines, cycle=cycle))
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{CONNECTIONS}",
            f"-d{max(1, int(cap))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{scheme}://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=cap + 30,
    )
    script.unlink()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT ") :])
    return {
        "requests": r["requests"],
        "seconds": r["duration_us"] / 1e6,
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "errors": r["errors"],
    }


def raw_requests(
    port: int,
    path: str,
    token: str | None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    targets: list[tuple[str, str]] | None = None,
) -> list[str]:
    """The HTTP/1.1 requests the asyncio generator sends in turn (one, or one per (path, body) target)."""
    head = f"Host: 127.0.0.1:{port}\r\nUser-Agent: strongroom-bench\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    out = []
    for p, body in targets or [(path, "")]:
        length = f"Content-Length: {len(body.encode())}\r\n" if body or method != "GET" else ""
        out.append(f"{method} {p} HTTP/1.1\r\n{head}{length}\r\n{body}")
    return out


async def _raw_load(
    port: int, requests: list[str], count: int, cap: float, connections: int
) -> dict[str, Any]:
    """`connections` keep-alive connections, each sending one request at a time (the next of `requests`)
    until `count` or `cap` is reached."""
    encoded = [r.encode() for r in requests]
    latencies: list[float] = []
    errors = 0
    left = count
    deadline = time.perf_counter() + cap

    async def connection() -> None:
        nonlocal left, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                t0 = time.perf_counter()
                writer.write(encoded[left % len(encoded)])
                head = await reader.readuntil(b"\r\n\r\n")
                length, chunked = 0, False
                for line in head.split(b"\r\n")[1:]:
                    lower = line.lower()
                    if lower.startswith(b"content-length:"):
                        length = int(line[15:])
                    elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
                        chunked = True
                if chunked:  # Go's net/http (OpenBao) chunks larger bodies
                    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                elif length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if head[9:12] not in (b"200", b"204"):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    seconds = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": seconds,
        "p50_ms": latencies[n // 2] * 1e3 if n else 0.0,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3 if n else 0.0,
        "errors": errors,
    }


def loadgen_child() -> None:
    """The asyncio load generator's process: job as JSON on stdin, result as JSON on stdout."""
    job = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        _raw_load(job["port"], job["requests"], job["count"], job["cap"], job["connections"])
    )
    print(json.dumps(result))


def run_asyncio(
    port: int,
    path: str,
    token: str | None,
    count: int,
    cap: float,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    targets: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Drive the asyncio generator in its own process; the job (token included) goes on stdin, not argv."""
    requests = raw_requests(port, path, token, method=method, headers=headers, targets=targets)
    job = json.dumps(
        {"port": port, "requests": requests, "count": count, "cap": cap, "connections": CONNECTIONS}
    )
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen-child"],
        input=job,
        capture_output=True,
        text=True,
        check=True,
        timeout=cap + 30,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# ---------------------------------------------------------------------------------------------
# The broker under test


def server_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "broker.cli", *args]


def start_broker(
    tmp: Path,
    postgres: str | None,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    tree: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `strongroom-server serve` on a free port with its data in `tmp`; on PostgreSQL the first
    broker in `tmp` generates the keyring, migrates and bootstraps, later ones share them. `tree`: run
    the broker from that source tree (another checkout, to compare) instead of this one."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {
        "STRONGROOM_DATA_DIR": str(data_dir),
        "STRONGROOM_HOST": "127.0.0.1",
        "STRONGROOM_PORT": str(port),
        **(extra_env or {}),
    }
    cwd = None
    if tree is not None:
        # `python -m` puts the working directory first on the path: run from the tree itself.
        env["PYTHONPATH"], cwd = str(tree), str(tree)
    if postgres:
        key_file = tmp / "keyring.json"
        env |= {"STRONGROOM_DATABASE_URL": postgres, "STRONGROOM_KEY_FILE": str(key_file)}
        setup = [["keys", "generate", "--out", str(key_file)], ["db", "upgrade"], ["bootstrap"]]
        for cmd in [] if key_file.exists() else setup:
            done = subprocess.run(
                server_cli(*cmd), env=env, cwd=cwd, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                sys.exit(f"strongroom-server {' '.join(cmd)} failed: {done.stderr.strip()}")
    log = tmp / f"server-{port}.log"
    proc = subprocess.Popen(
        server_cli("serve", "--workers", str(workers)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 120  # a loaded machine starts a 2-worker broker slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"broker exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/up", timeout=1).status_code == 200:
                return proc, port, data_dir
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"broker did not come up:\n{log.read_text()}")


def prepare(port: int, data_dir: Path) -> str:
    """Create the project, environments and secret; return a read-only token for production."""
    admin_secret = (data_dir / "bootstrap-admin.secret").read_text().strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/v1/auth/token", json={"client_id": "admin", "client_secret": admin_secret})
        r.raise_for_status()
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        c.post("/v1/projects", json={"slug": PROJECT}, headers=h).raise_for_status()
        base = f"/v1/projects/{PROJECT}/environments"
        c.post(base, json={"slug": "common"}, headers=h).raise_for_status()
        c.post(base, json={"slug": ENV, "parent": "common"}, headers=h).raise_for_status()
        value = secrets.token_hex(50)  # 100 bytes
        c.put(f"{base}/{ENV}/secrets/{NAME}", json={"value": value}, headers=h).raise_for_status()
        scope = {"project": PROJECT, "environments": ENV, "actions": ["read"]}
        r = c.post("/v1/tokens", json={"scopes": [scope]}, headers=h)
        r.raise_for_status()
        token: str = r.json()["token"]
        r = c.get(READ_PATH, headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        assert r.json()["value"] == value
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="run against this PostgreSQL database")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per run (default 10000)")
    parser.add_argument("--cap", type=float, default=15.0, help="seconds per run at most (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--wrk-seconds", type=float, default=8.0, help="seconds per wrk run (default 8)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="profile the broker with py-spy (on PATH) during the first read run; collapsed stacks to OUT",
    )
    parser.add_argument("--loadgen-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CONNECTIONS  # noqa: PLW0603  (read by both load generators)
    CONNECTIONS = args.connections
    if args.loadgen_child:
        loadgen_child()
        return 0

    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and wrk is None:
        sys.exit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as tmpdir:
        tmp = Path(tmpdir)
        proc, port, data_dir = start_broker(tmp, args.postgres)
        try:
            token = prepare(port, data_dir)

            def measure(
                label: str, path: str, tok: str | None, count: int, cap: float, profile: str | None = None
            ) -> Run:
                spy = None
                if profile:
                    seconds = str(max(1, int(min(cap, args.wrk_seconds) if wrk else cap)))
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(proc.pid),
                            "-d",
                            seconds,
                            "-r",
                            "200",
                            "-f",
                            "raw",
                            "-o",
                            profile,
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                s0, c0, t0 = cpu_seconds(proc.pid), children_cpu(), time.perf_counter()
                if wrk:
                    r = run_wrk(wrk, port, path, tok, min(cap, args.wrk_seconds), tmp)
                else:
                    r = run_asyncio(port, path, tok, count, cap)
                wall = time.perf_counter() - t0
                if spy is not None:
                    spy.wait(timeout=60)
                return Run(
                    label,
                    r["requests"],
                    r["seconds"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["errors"],
                    (cpu_seconds(proc.pid) - s0) / wall,
                    (children_cpu() - c0) / wall,
                )

            db = "PostgreSQL" if args.postgres else "SQLite (embedded)"
            bound = (
                f"{min(args.cap, args.wrk_seconds):.0f} s per run"
                if wrk
                else f"{args.requests} requests or {args.cap:.0f} s per run"
            )
            print(
                f"broker: uvicorn, 1 worker, {db}; load: {'wrk' if wrk else 'asyncio raw HTTP/1.1'}, "
                f"{CONNECTIONS} connections, {bound}"
            )
            measure("warm-up", "/up", None, 1000, 2)
            measure("warm-up", READ_PATH, token, 1000, 2)
            bare: list[Run] = []
            read: list[Run] = []
            for i in range(args.repeats):
                bare.append(measure("a GET /up", "/up", None, args.requests, args.cap))
                print(bare[-1].line())
                spy_out = args.py_spy if i == 0 else None
                read.append(measure("b read", READ_PATH, token, args.requests, args.cap, spy_out))
                print(read[-1].line())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    best_a = max(bare, key=lambda r: r.rps)
    best_b = max(read, key=lambda r: r.rps)
    ratio = best_b.rps / best_a.rps if best_a.rps else 0.0
    print("best of each:")
    print(best_a.line())
    print(best_b.line())
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio b/a = {ratio:.2f} (target >= {TARGET:.2f}): {verdict}")
    if any(r.errors for r in bare + read):
        print("some requests failed; the figures are not valid")
        return 1
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
