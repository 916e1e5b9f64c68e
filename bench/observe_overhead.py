"""CPU cost of the observing middleware (broker/api/observe.py) per request: the edge with and without it.

Run by hand: ``.venv/bin/python bench/observe_overhead.py`` (prometheus_client keeping values in memory,
as a broker without STRONGROOM_METRICS_PORT does), ``... --multiprocess`` (values in per-process files,
as `serve` with STRONGROOM_METRICS_PORT does), ``--json-log`` (request lines on, as JSON). It drives the
edge (`Edge`, then `ObservedEdge`) around a minimal ASGI app that answers 200 (the route already set, as
the router does) to `GET /up` with the headers of a CLI read (a bearer token, six headers, no
X-Request-Id): /up is not audited, so the edge does the same little work on both sides and the difference
is the observing part. It alternates bare and observed runs and prints the CPU microseconds per request
of each (process time, so other load on the machine moves it little) and the difference. Compare the difference with a read's
cost in bench/http_read.py (server CPU seconds over reads served).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class _Route:
    path = "/up"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = _Route
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/up",
        "headers": [
            (b"host", b"127.0.0.1:8750"),
            (b"user-agent", b"strongroom-cli/1"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip"),
            (b"connection", b"keep-alive"),
            (b"authorization", b"Bearer srt_" + b"x" * 43),
        ],
    }


async def _drive(app: Any, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    start = time.process_time()
    for _ in range(n):
        await app(_scope(), receive, send)
    return (time.process_time() - start) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--multiprocess", action="store_true", help="values in files (serve with metrics on)")
    parser.add_argument(
        "--json-log", action="store_true", help="request lines on, JSON, written to /dev/null"
    )
    args = parser.parse_args()
    if args.multiprocess and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # prometheus_client chooses at its first import: run again with the variable set.
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}
            return os.spawnve(os.P_WAIT, sys.executable, [sys.executable, *sys.argv], env)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import json

    from broker.api.edge import Edge
    from broker.api.observe import ObservedEdge
    from broker.config import Settings
    from broker.keys import new_document
    from broker.main import build_runtime
    from broker.services.metrics import Metrics
    from broker.services.runtime import utcnow

    if args.json_log:
        import logging.config

        from broker import logs

        config = logs.config("json")
        config["handlers"]["stderr"] = {
            "class": "logging.FileHandler",
            "filename": os.devnull,
            "formatter": "default",
        }
        logging.config.dictConfig(config)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = build_runtime(
            Settings(
                database_url=f"sqlite:///{tmp}/unused.db",  # never opened: /up touches no database
                data_dir=Path(tmp),
                keyring=json.dumps(new_document(utcnow(), dev=False)),
            )
        )
    edge = Edge(_app, runtime)
    observed = ObservedEdge(_app, runtime, Metrics(), log_requests=args.json_log)
    bare_runs, observed_runs = [], []
    for _ in range(args.repeats):
        bare_runs.append(asyncio.run(_drive(edge, args.requests)))
        observed_runs.append(asyncio.run(_drive(observed, args.requests)))
    bare, obs = min(bare_runs), min(observed_runs)
    mode = "multiprocess (files)" if args.multiprocess else "in memory"
    mode += ", JSON request lines" if args.json_log else ", no request lines"
    print(f"prometheus_client values {mode}; {args.requests} requests x {args.repeats}, best run of each")
    print(f"Edge            {bare:7.2f} us CPU per request")
    print(f"ObservedEdge    {obs:7.2f} us CPU per request")
    print(f"middleware cost {obs - bare:7.2f} us CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
