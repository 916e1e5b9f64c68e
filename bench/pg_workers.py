"""Why 2 PostgreSQL workers serve reads slower than 1: what each request costs the database, and what waits.

Run by hand: ``.venv/bin/python bench/pg_workers.py [--seconds 8] [--rounds 2]``. It starts a throwaway
durable PostgreSQL cluster with pg_stat_statements loaded, a broker with 1 worker and one with 2 workers
on the same database (as bench/peer.py does), and for each, in alternating rounds, drives the one-secret
read with the load generator of bench/peer.py while it samples pg_stat_activity every 50 ms. It prints,
per run: requests/s, the broker's and the cluster's CPU per request, every statement's calls per request
and time (pg_stat_statements, reset before each run), and the average number of backends in each wait
state (e.g. ``Lock:advisory`` on the audit chainer's lock, ``IO:WALSync`` on a commit's flush). At the
end: how many events wait to be linked, and the generic plans of the chainer's statements.
``--custom-plans`` sets plan_cache_mode = force_custom_plan on the database first, for comparison.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import http_read  # noqa: E402  (bench/, beside this file)
import peer  # noqa: E402

from tests.support import pg  # noqa: E402

DB = "bench"
STATEMENTS = (
    "SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) "
    f"FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{DB}') "
    "AND query NOT LIKE '%pg_stat_%' ORDER BY calls DESC LIMIT 14"
)
ACTIVITY = (
    "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') || ' ' || state || ' ' || "
    "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
    f"WHERE datname = '{DB}' AND pid <> pg_backend_pid() AND state <> 'idle'"
)


def sample_waits(cluster: pg.Cluster, stop: threading.Event) -> tuple[collections.Counter[str], int]:
    """Count the non-idle backends by wait state until `stop` is set; (counts, samples)."""
    waits: collections.Counter[str] = collections.Counter()
    samples = 0
    while not stop.wait(0.05):
        samples += 1
        for line in cluster.psql(ACTIVITY, db=DB).splitlines():
            waits[line] += 1
    return waits, samples


def main() -> int:
    """Run the rounds and print each run's statements and waits."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 then 2 workers (default 2)")
    parser.add_argument(
        "--custom-plans",
        action="store_true",
        help="ALTER DATABASE ... SET plan_cache_mode = force_custom_plan (never a generic plan)",
    )
    args = parser.parse_args()
    with pg.cluster(durable=True) as cluster, tempfile.TemporaryDirectory(prefix="strongroom-pgw-") as tmpdir:
        tmp = Path(tmpdir)
        cluster.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        # pg_ctl restart keeps the command line the cluster was started with.
        subprocess.run(
            [
                *cluster.run_as,
                str(cluster.bindir / "pg_ctl"),
                *("-D", str(cluster.datadir), "-w", "-m", "fast", "-l", str(cluster.datadir.parent / "log")),
                "restart",
            ],
            check=True,
            capture_output=True,
        )
        cluster.psql(f"CREATE DATABASE {DB}")
        cluster.psql("CREATE EXTENSION pg_stat_statements", db=DB)
        if args.custom_plans:
            cluster.psql(f"ALTER DATABASE {DB} SET plan_cache_mode = force_custom_plan")
        url = cluster.url(DB).replace("postgresql+asyncpg://", "postgresql://")
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        extra = {"STRONGROOM_TOKEN_TTL": str(4 * 3600)}
        procs = []
        try:
            one, port1, data_dir = http_read.start_broker(tmp, url, extra_env=extra)
            procs.append(one)
            tokens = peer.broker_tokens(port1, data_dir)
            two, port2, _ = http_read.start_broker(tmp, url, workers=2, extra_env=extra)
            procs.append(two)
            bench = peer.Bench(wrk=shutil.which("wrk"), seconds=args.seconds, requests=20_000, tmp=tmp)
            sides = [("1 worker", one, port1), ("2 workers", two, port2)]
            for label, proc, port in sides:  # warm-up
                peer.measure(bench, peer.Server(label, proc.pid), peer.broker_works(port, *tokens)["read"])
            for _ in range(args.rounds):
                for label, proc, port in sides:
                    work = peer.broker_works(port, *tokens)["read"]
                    cluster.psql("SELECT pg_stat_statements_reset()", db=DB)
                    stop = threading.Event()
                    result: list[tuple[collections.Counter[str], int]] = []
                    sampler = threading.Thread(
                        target=lambda out=result, done=stop: out.append(sample_waits(cluster, done))
                    )
                    sampler.start()
                    fig = peer.measure(bench, peer.Server(label, proc.pid, postmaster), work)
                    stop.set()
                    sampler.join()
                    requests = max(1.0, fig.rps * args.seconds)
                    print(
                        f"\n=== {label}: {fig.rps:.0f} req/s; CPU per request: broker {fig.cpu_ms:.2f} ms, "
                        f"PostgreSQL {fig.db_cpu_ms or 0:.2f} ms; load {fig.load:.2f}"
                    )
                    for line in cluster.psql(STATEMENTS, db=DB).splitlines():
                        calls, total, mean, query = line.split("|", 3)
                        print(
                            f"  {int(calls) / requests:6.3f}/request  total {float(total):8.1f} ms"
                            f"  mean {float(mean):7.3f} ms  {query}"
                        )
                    waits, samples = result[0]
                    print(f"  backends by wait state (average of {samples} samples):")
                    for state, count in waits.most_common(8):
                        print(f"    {count / max(1, samples):5.2f}  {state}")
            explain(cluster)
        finally:
            for proc in procs:
                peer.stop(proc)
    return 0


def explain(cluster: pg.Cluster) -> None:
    """The chainer's backlog, and the plans PostgreSQL runs its statements with once it has switched to a
    generic plan for them (asyncpg prepares every statement; after five runs a generic plan may win)."""
    print("\n=== after the runs")
    print(
        "  events / unlinked:",
        cluster.psql(
            "SELECT count(*) || ' / ' || count(*) FILTER (WHERE seq IS NULL) FROM audit_events", db=DB
        ).strip(),
    )
    script = (
        "SET plan_cache_mode = force_generic_plan;\n"
        "PREPARE link(bigint, varchar, varchar, bigint) AS UPDATE audit_events SET seq = $1, prev_hash = $2, "
        "hash = $3 WHERE id = $4 AND seq IS NULL;\n"
        "PREPARE pending(int) AS SELECT id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT $1;\n"
        "EXPLAIN EXECUTE link(1, 'x', 'y', 1);\n"
        "EXPLAIN EXECUTE pending(1000);\n"
    )
    out = subprocess.run(
        [
            *cluster.run_as,
            str(cluster.bindir / "psql"),
            *("-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", DB, "-Atq"),
        ],
        input=script,
        capture_output=True,
        text=True,
        check=True,
    )
    # Key rows are inserted by the pass that links their events (revision 0010): nothing to plan there.
    print("  generic plans (link UPDATE, pending SELECT):")
    for line in out.stdout.splitlines():
        print(f"    {line}")


if __name__ == "__main__":
    sys.exit(main())
