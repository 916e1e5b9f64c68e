"""Two broker replicas on PostgreSQL behind HAProxy terminating TLS: reads/s with 1 and 2, and failover.

Run by hand: ``.venv/bin/python bench/replicas.py [--seconds 8] [--rounds 2] [--kills 3]``. Needs
PostgreSQL's binaries, ``haproxy`` and ``wrk`` (``apt-get install postgresql haproxy wrk``).

It starts a throwaway durable PostgreSQL cluster (fsync and synchronous commit on, as in production),
makes the keyring, the schema and the admin once with ``strongroom-server``, starts two ``serve``
processes (one uvicorn worker each) on loopback ports and HAProxy in front of them with the
configuration of tests/support/haproxy.py (the one docs/production.md shows): TLS with a certificate from
a CA made here, health checks on /up every 200 ms, redispatch and L7 retries. Then:

- reads/s: wrk (32 connections over HTTPS, 2 threads) reads one secret through the proxy with a
  read-only token (the read of bench/peer.py), with r2 in maintenance (1 replica) and then with both,
  alternating for ``--rounds``; it prints each run, the best of each side and the ratio 2/1.
- failover: 4 client threads read through the proxy while one replica is killed with SIGKILL; the gap is
  the longest time without any successful answer from the kill on; it also prints the failed requests
  and when HAProxy's health checks marked the replica down. The killed replica is started again between
  kills (the victim alternates).

The machine's 1-minute load is printed with every figure: on a 2-core machine shared with other work the
ratio says more about the cores than about the broker (the proxy, wrk, both replicas and PostgreSQL share
two cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import http_read  # noqa: E402  (bench/, beside this file)
import peer  # noqa: E402

from tests.e2e.test_serve_tls import make_ca_and_server  # noqa: E402
from tests.support import haproxy, pg  # noqa: E402

READ = f"/v1/projects/{peer.PROJECT}/environments/production/secrets/{peer.ONE}"
CLIENTS = 4  # reader threads during a kill


@dataclass
class Replicas:
    """The replicas' shared settings and processes."""

    tmp: Path
    env: dict[str, str]
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str) -> None:
        """Start replica `name` on its port and wait until it answers /up."""
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            http_read.server_cli("serve", "--port", str(self.ports[name])),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"{name} exited early:\n{(self.tmp / f'{name}.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports[name]}/up", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        sys.exit(f"{name} did not come up")


def setup(tmp: Path, url: str) -> Replicas:
    """Keyring, schema and admin made once; both replicas started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {
        "STRONGROOM_DATABASE_URL": url,
        "STRONGROOM_DATA_DIR": str(tmp / "data"),
        "STRONGROOM_KEY_FILE": str(tmp / "keyring.json"),
        "STRONGROOM_AUDIT_SIGNING_KEY_FILE": str(tmp / "audit.pem"),
        "STRONGROOM_AUDIT_CHECKPOINT_DIR": str(tmp / "checkpoints"),
        "STRONGROOM_TOKEN_TTL": str(4 * 3600),
    }
    for cmd in (
        ["keys", "generate", "--out", str(tmp / "keyring.json")],
        ["audit", "keygen", "--out", str(tmp / "audit.pem")],
        ["db", "upgrade"],
        ["bootstrap"],
    ):
        done = subprocess.run(
            http_read.server_cli(*cmd), env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"strongroom-server {' '.join(cmd)} failed: {done.stderr.strip()}")
    replicas = Replicas(tmp, env, {"r1": pg.free_port(), "r2": pg.free_port()}, {})
    for name in replicas.ports:
        replicas.start(name)
    return replicas


def read_rate(wrk: str, proxy: haproxy.Proxy, token: str, seconds: float, tmp: Path) -> dict[str, float]:
    """One wrk run of the one-secret read through the proxy, over HTTPS."""
    load = peer.load1()
    r = http_read.run_wrk(wrk, proxy.port, READ, token, seconds, tmp, threads=2, scheme="https")
    r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
    r["load"] = max(load, peer.load1())
    return r


def failover(proxy: haproxy.Proxy, ca: Path, token: str, replicas: Replicas, victim: str) -> str:
    """Kill `victim` under CLIENTS readers; a line with the gap, the failures and the detection time."""
    answers: list[tuple[float, bool]] = []  # (end, ok)
    stop = threading.Event()

    def reader() -> None:
        context = ssl.create_default_context(cafile=str(ca))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=proxy.url, verify=context, headers=headers, timeout=30) as c:
            while not stop.is_set():
                try:
                    good = c.get(READ).status_code == 200
                except httpx.HTTPError:
                    good = False
                answers.append((time.monotonic(), good))

    def successes() -> int:
        return sum(1 for _, good in list(answers) if good)

    def wait_successes(n: int) -> None:
        target = successes() + n
        deadline = time.monotonic() + 120
        while successes() < target:
            if time.monotonic() > deadline:
                sys.exit("the readers stopped getting answers")
            time.sleep(0.01)

    threads = [threading.Thread(target=reader) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    load = peer.load1()
    try:
        wait_successes(100)
        killed = time.monotonic()
        replicas.procs[victim].send_signal(signal.SIGKILL)
        replicas.procs[victim].wait()
        proxy.wait_state(victim, up=False)
        down = time.monotonic()
        wait_successes(100)
    finally:
        stop.set()
        for t in threads:
            t.join()
    ends = sorted(end for end, good in answers if good)
    before = max(e for e in ends if e <= killed)
    after = [e for e in ends if e > before]
    gap = max(b - a for a, b in zip([before, *after], after, strict=False))
    failed = sum(1 for end, good in answers if not good and end >= killed)
    return (
        f"  kill -9 {victim}: gap {gap * 1e3:7.1f} ms  failed requests {failed}  "
        f"marked down after {(down - killed) * 1e3:6.0f} ms  load {max(load, peer.load1()):.2f}"
    )


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per wrk run (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 then 2 replicas (default 2)")
    parser.add_argument("--kills", type=int, default=3, help="kill -9 measurements (default 3)")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None or haproxy.binary() is None or pg.find_bindir() is None:
        sys.exit("needs wrk, haproxy and PostgreSQL (apt-get install wrk haproxy postgresql)")
    with pg.cluster(durable=True) as cluster, tempfile.TemporaryDirectory(prefix="strongroom-repl-") as d:
        tmp = Path(d)
        cluster.psql("CREATE DATABASE bench")
        url = cluster.url("bench").replace("postgresql+asyncpg://", "postgresql://")
        replicas = setup(tmp, url)
        try:
            reader, _ = peer.broker_tokens(replicas.ports["r1"], tmp / "data")
            ca, cert, key = make_ca_and_server(tmp)
            with haproxy.running(
                tmp / "proxy", port=pg.free_port(), cert=cert, key=key, servers=replicas.ports
            ) as proxy:
                for name in replicas.ports:
                    proxy.wait_state(name, up=True)
                print(
                    f"{os.cpu_count()} cores; PostgreSQL durable; replicas: 1 uvicorn worker each; HAProxy "
                    f"TLS; wrk {http_read.CONNECTIONS} connections over HTTPS, {args.seconds:.0f} s per run"
                )
                read_rate(wrk, proxy, reader, 2, tmp)  # warm-up
                figures: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(args.rounds):
                    for count in (1, 2):
                        proxy.command(f"{'disable' if count == 1 else 'enable'} server {haproxy.BACKEND}/r2")
                        if count == 2:
                            proxy.wait_state("r2", up=True)
                        r = read_rate(wrk, proxy, reader, args.seconds, tmp)
                        figures[count].append(r["rps"])
                        print(
                            f"  {count} replica{'s' if count == 2 else ' '}  {r['rps']:8.0f} reads/s  "
                            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']:.0f}"
                            f"  load {r['load']:.2f}"
                        )
                one, two = max(figures[1]), max(figures[2])
                ratios = [b / a for a, b in zip(figures[1], figures[2], strict=True) if a]
                print(
                    f"best: 1 replica {one:.0f} reads/s, 2 replicas {two:.0f} reads/s; ratio 2/1 "
                    f"{two / one:.2f} (per round: {', '.join(f'{x:.2f}' for x in ratios)}; median "
                    f"{statistics.median(ratios):.2f})"
                )
                print(f"failover ({CLIENTS} reader threads over HTTPS through the proxy):")
                for k in range(args.kills):
                    victim = "r2" if k % 2 == 0 else "r1"
                    print(failover(proxy, ca, reader, replicas, victim), flush=True)
                    replicas.start(victim)
                    proxy.wait_state(victim, up=True)
        finally:
            for proc in replicas.procs.values():
                peer.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
