"""The console's audit pages on a trail of 100,000 events: each must answer in under 300 ms.

Run by hand: ``.venv/bin/python bench/console.py [--events 100000] [--requests 20] [--pg]`` (SQLite in a
temporary directory, migrated to head; with ``--pg``, a throwaway PostgreSQL cluster from the installed
binaries with production's durability settings, tests/support/pg.py, analysed after seeding as autovacuum
would have done). Seeding is a bulk INSERT of correctly shaped, already linked rows
(each hash is the real `record_hash` of the real record, seq 1..N from the genesis hash) and their key
rows (the real `touched_keys`), in batches of 5,000; the broker then appends its own events after them
through the one appender, so the chain stays valid. The trail mixes 40 actors (one rare), reads, writes,
exports, deploys and denials, 500 key names plus a frequent and a rare one, over the last 100 days.

Then, in process (the FastAPI app through Starlette's TestClient, which is httpx over the ASGI app),
signed in through the console's own form as the admin, it requests each page N times and prints the
median and p95 against the 300 ms target, and the machine's load average. Every request is a full one:
the session check, the chainer's pass, the query, the request's own audit event and the template. It
also prints how many rows each page showed and whether it links a next page; it exits 1 if a p95 misses.
Figures: README "Web console".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.audit.canonical import GENESIS, canonical_json, record_hash  # noqa: E402
from broker.audit.fingerprint import fingerprint  # noqa: E402
from broker.db import migrate  # noqa: E402
from broker.main import build_runtime, create_app  # noqa: E402
from broker.models import audit_event_keys, audit_events  # noqa: E402
from broker.services.audit.events import to_record  # noqa: E402
from broker.services.audit.writing import touched_keys  # noqa: E402
from broker.services.auth import bootstrap_admin  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.support import pg  # noqa: E402

TARGET_MS = 300.0
ORIGIN = "http://127.0.0.1:8000"
BATCH = 5000
ACTIONS = ("secret.read",) * 6 + ("secret.write", "env.export", "deploy.bundle", "secret.read")


def event_row(i: int, start: datetime, span: timedelta, n: int) -> dict[str, Any]:
    """Event i of n (column values, unlinked): spread evenly over `span` from `start`."""
    action = ACTIONS[i % len(ACTIONS)]
    denied = i % 10 == 9
    if i % 5 == 0:
        name = "DATABASE_URL"
    elif i % 1000 == 1:
        name = "RARE_KEY"
    else:
        name = f"SECRET_{i % 500}"
    actor = "rare-auditor" if i % 2000 == 7 else f"ci-bot-{i % 39}"
    env = ("production", "staging", "development")[i % 3]
    event: dict[str, Any] = {
        "occurred_at": start + span * (i / n),
        "request_id": uuid.UUID(int=i).hex,
        "actor_id": i % 40,
        "actor_type": "machine",
        "actor_name": actor,
        "token_accessor": f"sra_{i % 40:043d}",
        "scopes": canonical_json(
            [{"actions": ["read"], "environments": env, "project": "microblog"}]
        ).decode(),
        "source_addr": f"192.0.2.{i % 200}",
        "user_agent": "strongroom-cli/0.1.0",
        "client_kind": "cli",
        "method": "PUT" if action == "secret.write" else "GET",
        "route": f"/v1/projects/microblog/environments/{env}/secrets/{name}",
        "action": action,
        "project": "microblog",
        "environment": env,
        "secret_name": name,
        "version": 3,
        "fingerprints": None,
        "outcome": "denied" if denied else "ok",
        "status": 403 if denied else 200,
        "reason": f"this token does not grant read on microblog/{env}" if denied else None,
    }
    if not denied:
        fp = fingerprint(b"k" * 32, f"value-{i % 500}")
        event["fingerprints"] = canonical_json(
            [{"environment": env, "fingerprint": fp, "name": name, "version": 3}]
        ).decode()
    return event


async def seed(url: str, n: int) -> float:
    """Bulk-insert n linked events and their key rows into a migrated database; seconds taken."""
    began = time.perf_counter()
    start = datetime.now(UTC) - timedelta(days=100)
    engine = create_async_engine(url)
    prev = GENESIS
    async with engine.begin() as conn:
        for low in range(1, n + 1, BATCH):
            events, keys = [], []
            for i in range(low, min(low + BATCH, n + 1)):
                event = event_row(i, start, timedelta(days=100), n)
                digest = record_hash(to_record(event, seq=i, prev_hash=prev))
                keys += [
                    {"event_id": i, "seq": i, "project": p, "environment": e, "name": k}
                    for p, e, k in touched_keys(event)
                ]
                events.append({**event, "id": i, "seq": i, "prev_hash": prev, "hash": digest})
                prev = digest
            await conn.execute(insert(audit_events), events)
            await conn.execute(insert(audit_event_keys), keys)
        if engine.dialect.name == "postgresql":
            # The ids were given: the broker's own events continue after them.
            await conn.execute(
                text("SELECT setval(pg_get_serial_sequence('audit_events', 'id'), :n)"), {"n": n}
            )
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE audit_events"))
            await conn.execute(text("ANALYZE audit_event_keys"))
    await engine.dispose()
    return time.perf_counter() - began


def timings(client: TestClient, path: str, requests: int) -> tuple[float, float, int, bool]:
    """(median ms, p95 ms, table rows shown, has a next page) of `requests` GETs of `path` after one warm-up."""
    first = client.get(path)
    assert first.status_code == 200, (path, first.status_code, first.text[:300])
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    times.sort()
    rows = first.text.count('<td><a href="/console/audit/events/')
    p95 = times[max(0, round(0.95 * len(times)) - 1)]
    return statistics.median(times), p95, rows, 'id="next"' in first.text


def main() -> int:
    """Seed the trail, sign in, time every audit page and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--pg", action="store_true", help="PostgreSQL (a throwaway cluster) instead of SQLite"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strongroom-console-")))
        if args.pg:
            cluster = stack.enter_context(pg.cluster(durable=True))
            cluster.psql("CREATE DATABASE console_bench")
            url = cluster.url("console_bench")
        else:
            url = f"sqlite+aiosqlite:///{tmp / 'broker.db'}"
        migrate.upgrade(url)
        took = asyncio.run(seed(url, args.events))
        database = "PostgreSQL (durable)" if args.pg else "SQLite"
        print(
            f"{database}: seeded {args.events} linked events (bulk INSERT, real hashes and key rows) in {took:.1f} s"
        )
        rt = build_runtime(make_settings(url, tmp))
        with TestClient(create_app(rt), base_url=ORIGIN, client=("127.0.0.1", 50000)) as c:
            created = c.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
            assert created is not None
            page = c.get("/console/login")
            m = re.search(r'name="nonce" value="([^"]*)"', page.text)
            assert m is not None
            r = c.post(
                "/console/login",
                data={"nonce": m.group(1), "client_id": "admin", "client_secret": created.client_secret},
                headers={"Origin": ORIGIN},
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text
            day = datetime.now(UTC).date()
            since, until = (day - timedelta(days=60)).isoformat(), (day - timedelta(days=53)).isoformat()
            oldest, week = (day - timedelta(days=99)).isoformat(), (day - timedelta(days=92)).isoformat()
            pages = [
                ("trail, first page", "/console/audit"),
                ("trail, last page (cursor=51)", "/console/audit?cursor=51"),
                ("name=DATABASE_URL (1 in 5)", "/console/audit?name=DATABASE_URL"),
                ("name=RARE_KEY (1 in 1000)", "/console/audit?name=RARE_KEY"),
                (
                    "name + project + environment",
                    "/console/audit?name=DATABASE_URL&project=microblog&environment=production",
                ),
                ("actor=ci-bot-3 (1 in 39)", "/console/audit?actor=ci-bot-3"),
                ("actor=rare-auditor (1 in 2000)", "/console/audit?actor=rare-auditor"),
                ("actor=nobody (no match: whole trail)", "/console/audit?actor=nobody"),
                ("source=192.0.2.0/28 (CIDR, 8 in 100)", "/console/audit?source=192.0.2.0/28"),
                ("source=198.51.100.0/24 (CIDR, no match)", "/console/audit?source=198.51.100.0/24"),
                ("source=192.0.2.240/28 (no match, same /24)", "/console/audit?source=192.0.2.240/28"),
                ("source=192.0.16.0/20 (no match, same /16)", "/console/audit?source=192.0.16.0/20"),
                ("source=2001:db8::/32 (IPv6 CIDR, no match)", "/console/audit?source=2001:db8::/32"),
                ("source=192.0.0.0/16 (CIDR, all)", "/console/audit?source=192.0.0.0/16"),
                ("action=secret.write (1 in 10)", "/console/audit?action=secret.write"),
                ("action=deploy (family)", "/console/audit?action=deploy"),
                ("action=audit.export (no match)", "/console/audit?action=audit.export"),
                ("outcome=denied", "/console/audit?outcome=denied"),
                ("outcome=error (no match)", "/console/audit?outcome=error"),
                (f"since {since} until {until}", f"/console/audit?since={since}&until={until}"),
                (f"since {oldest} until {week} (oldest)", f"/console/audit?since={oldest}&until={week}"),
                ("since 90d", "/console/audit?since=90d"),
                ("one event", f"/console/audit/events/{args.events // 2}"),
                ("chain", "/console/audit/chain"),
            ]
            print(f"{args.events} events, {args.requests} requests per page, load average {os.getloadavg()}")
            print(f"{'page':44} {'median':>9} {'p95':>9}  rows more  target {TARGET_MS:.0f} ms")
            misses = 0
            for label, path in pages:
                median, p95, rows, more = timings(c, path, args.requests)
                ok = p95 < TARGET_MS
                misses += not ok
                verdict = "ok" if ok else "MISS"
                print(
                    f"{label:44} {median:7.1f}ms {p95:7.1f}ms  {rows:4d} {'yes' if more else 'no':>4}  {verdict}"
                )
            print(f"load average after: {os.getloadavg()}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
