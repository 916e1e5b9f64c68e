"""Verifying the audit chain vs a bare loop: `verify` must cost at most 3x fetching the same rows and
chaining SHA-256 over them, in constant memory.

Run by hand: ``.venv/bin/python bench/audit.py`` (SQLite in a temporary directory) or
``.venv/bin/python bench/audit.py --postgres postgresql://user@127.0.0.1:5432/emptydb`` (an empty or
migrated database; the bench fills it). It writes N events shaped like real ones (scopes, user agents,
fingerprints on reads) and links them, with a signed checkpoint every 1,000, then times, alternately over
a few repeats:

  a) bare:   the same batched fetch as verify (same query, same batch size), then
             h = sha256(prev + repr(row)) for each row: the least any verifier must do;
  b) verify: `verify_database` as `strongroom-server audit verify` runs it: canonical record per row,
             type checks, hash and link checks, checkpoint signatures and heads, truncation check.

It prints the best run of each and the ratio b/a (target <= 3), and the peak memory traced while
verifying N/5 and N events: constant memory means the two peaks are about the same (only the
checkpoints, one per thousand events, grow with N).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from broker.audit.canonical import GENESIS, canonical_json, format_time, record_hash
from broker.audit.fingerprint import fingerprint
from broker.config import Settings
from broker.db import migrate
from broker.keys import new_document
from broker.main import build_runtime
from broker.models import audit_events
from broker.repositories import audit as audit_repo
from broker.services import audit as svc
from broker.services.audit import chaining
from broker.services.audit.events import BATCH
from broker.services.runtime import Runtime

LIMIT = 3.0
CHECKPOINT_EVERY = 1000


def fake_events(n: int, start: datetime) -> list[dict[str, Any]]:
    """N linked events as column values (reads, writes and denials, like real traffic)."""
    scopes = canonical_json(
        [{"actions": ["read"], "environments": "production", "project": "microblog"}]
    ).decode()
    key = b"k" * 32
    out = []
    prev = GENESIS
    for i in range(1, n + 1):
        kind = i % 10
        name = f"SECRET_{i % 50}"
        event: dict[str, Any] = {
            "occurred_at": start + timedelta(milliseconds=i),
            "request_id": uuid.UUID(int=i).hex,
            "actor_id": 7,
            "actor_type": "machine",
            "actor_name": "ci-bot",
            "token_accessor": "sra_" + "x" * 43,
            "scopes": scopes,
            "source_addr": "192.0.2.10",
            "user_agent": "strongroom-cli/0.1.0",
            "client_kind": "cli",
            "method": "GET" if kind else "PUT",
            "route": f"/v1/projects/microblog/environments/production/secrets/{name}",
            "action": "secret.read" if kind else "secret.write",
            "project": "microblog",
            "environment": "production",
            "secret_name": name,
            "version": 3,
            "fingerprints": None,
            "outcome": "denied" if kind == 9 else "ok",
            "status": 403 if kind == 9 else 200,
            "reason": "this token does not grant read on microblog/production" if kind == 9 else None,
        }
        if kind != 9:
            fp = fingerprint(key, f"value-{i % 50}")
            event["fingerprints"] = canonical_json(
                [{"environment": "production", "fingerprint": fp, "name": name, "version": 3}]
            ).decode()
        digest = record_hash(svc.to_record(event, seq=i, prev_hash=prev))
        event.update(seq=i, prev_hash=prev, hash=digest)
        prev = digest
        out.append(event)
    return out


async def fill(rt: Runtime, n: int) -> None:
    """Insert N linked events and a signed checkpoint every CHECKPOINT_EVERY."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = fake_events(n, start)
    async with rt.engine.begin() as conn:
        for i in range(0, n, 5000):
            await conn.execute(insert(audit_events), events[i : i + 5000])
        for e in events[CHECKPOINT_EVERY - 1 :: CHECKPOINT_EVERY]:
            signed = rt.audit.signer.sign(seq=e["seq"], head=e["hash"], time=format_time(e["occurred_at"]))
            await audit_repo.add_checkpoint(
                conn,
                seq=e["seq"],
                head=e["hash"],
                signed_at=e["occurred_at"],
                key_id=signed.checkpoint.key_id,
                document=signed.document(),
            )
            rt.audit.checkpoints.write(signed)


async def bare(rt: Runtime, high: int) -> tuple[int, str]:
    """The baseline: the same batched fetch, SHA-256 chained over each row's repr."""
    prev = b""
    cursor, count = 1, 0
    while cursor <= high:
        async with rt.engine.connect() as conn:
            rows = await audit_repo.events_between(conn, cursor, high, limit=BATCH)
        if not rows:
            break
        for row in rows:
            prev = hashlib.sha256(prev + repr(tuple(row)).encode()).digest()
        count += len(rows)
        cursor = int(rows[-1].seq) + 1
    return count, prev.hex()


async def verify(rt: Runtime) -> Any:
    return await chaining.verify_database(rt)


async def timed(rt: Runtime, fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await fn(rt, *args)
    return time.perf_counter() - t0, result


async def peak_memory(rt: Runtime) -> int:
    tracemalloc.start()
    try:
        report = await verify(rt)
        assert report.ok, report.problem
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def runtime(url: str, data: Path) -> Runtime:
    keyring = json.dumps(new_document(datetime.now(UTC), dev=False))
    return build_runtime(Settings(database_url=url, data_dir=data, keyring=keyring))


async def run(args: argparse.Namespace, tmp: Path) -> tuple[float, float, int, int]:
    """Fill, then time both sides alternately; everything on one event loop (asyncpg needs that)."""
    url = args.postgres or f"sqlite+aiosqlite:///{tmp / 'audit.db'}"
    rt = runtime(url, tmp / "data")
    t0 = time.perf_counter()
    await fill(rt, args.events)
    print(
        f"database: {'PostgreSQL' if args.postgres else 'SQLite'}; {args.events} events written and linked "
        f"in {time.perf_counter() - t0:.1f} s; a checkpoint every {CHECKPOINT_EVERY}"
    )
    best_a = best_b = float("inf")
    for _ in range(args.repeats):
        ta, (count, _) = await timed(rt, bare, args.events)
        tb, report = await timed(rt, verify)
        assert count == args.events and report.ok and report.events == args.events, report.problem
        best_a, best_b = min(best_a, ta), min(best_b, tb)
        print(f"a bare fetch + sha256   {ta:6.2f} s  {args.events / ta:>9.0f} rows/s")
        print(
            f"b verify                {tb:6.2f} s  {args.events / tb:>9.0f} rows/s  "
            f"(vouched to seq {report.vouched_to}, {report.checkpoints} checkpoints)"
        )
    small = runtime(f"sqlite+aiosqlite:///{tmp / 'small.db'}", tmp / "small-data")
    await fill(small, args.events // 5)
    peak_small, peak_full = await peak_memory(small), await peak_memory(rt)
    await small.engine.dispose()
    await rt.engine.dispose()
    return best_a, best_b, peak_small, peak_full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="run against this (empty) PostgreSQL database")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-audit-") as tmpdir:
        tmp = Path(tmpdir)
        # Alembic runs its own event loop: migrate before the bench's loop starts.
        migrate.upgrade(args.postgres or f"sqlite+aiosqlite:///{tmp / 'audit.db'}")
        migrate.upgrade(f"sqlite+aiosqlite:///{tmp / 'small.db'}")
        best_a, best_b, peak_small, peak_full = asyncio.run(run(args, tmp))
    ratio = best_b / best_a
    print(
        f"peak memory while verifying: {peak_small / 1e6:.1f} MB for {args.events // 5} events, "
        f"{peak_full / 1e6:.1f} MB for {args.events} events"
    )
    verdict = "ok" if ratio <= LIMIT else "ABOVE LIMIT"
    print(
        f"best: bare {best_a:.2f} s, verify {best_b:.2f} s; ratio b/a = {ratio:.2f} (limit {LIMIT:.1f}): {verdict}"
    )
    return 0 if ratio <= LIMIT and peak_full < 3 * peak_small + 4e6 else 1


if __name__ == "__main__":
    sys.exit(main())
