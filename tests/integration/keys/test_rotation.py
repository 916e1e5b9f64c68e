"""KEK rotation on SQLite and PostgreSQL (SECURITY.md A6, A7, H47).

Each phase runs in its own event loop with runtimes built from the keyring file as it is at that
moment, the way a restarted broker or a `strongroom-server keys ...` process would see it.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from broker.keys import rotate_file
from broker.services.keys import rewrap, usage
from broker.services.runtime import Runtime, utcnow
from tests.integration.keys.conftest import (
    BASE,
    KeyedBroker,
    decrypt_every_row,
    http,
    read_all_over_http,
    seed,
    stored_rows,
)


async def _dispose(*runtimes: Runtime) -> None:
    for rt in runtimes:
        await rt.engine.dispose()


def _seed(kb: KeyedBroker) -> dict[int, tuple[bytes, bytes, str]]:
    async def go() -> dict[int, tuple[bytes, bytes, str]]:
        rt = kb.runtime()
        try:
            await seed(kb, rt)
            return await stored_rows(rt)
        finally:
            await _dispose(rt)

    return asyncio.run(go())


class Interrupted(Exception):
    """Stands in for the rewrap job being killed."""


def test_a6_rotate_rewrap_retire(keyed: KeyedBroker) -> None:
    kb = keyed
    old_key = kb.current_key()
    before = _seed(kb)
    assert len(before) == len(kb.versions) >= 30
    assert {kek for _, _, kek in before.values()} == {old_key}

    new_key = rotate_file(kb.key_file, now=utcnow())
    assert kb.current_key() == new_key != old_key
    assert kb.key_ids() == [old_key, new_key]
    assert kb.key_file.stat().st_mode & 0o777 == 0o600

    # Retiring the old key is refused while data keys still need it, and the file is left alone.
    r = kb.cli("keys", "retire", old_key)
    assert r.exit_code != 0
    assert f"still wraps {len(before)} data keys" in r.output
    assert kb.key_ids() == [old_key, new_key]
    # The current key can never be retired.
    r = kb.cli("keys", "retire", new_key)
    assert r.exit_code != 0

    async def rotate_phase() -> dict[int, tuple[bytes, bytes, str]]:
        rt = kb.runtime()  # a restarted broker: both keys, the new one current
        try:
            assert rt.keys.keyring.current_id == new_key
            # New writes already go under the new key, before any rewrap.
            async with http(rt) as c:
                r = await c.put(
                    f"{BASE}/common/secrets/AFTER_ROTATE", json={"value": "new"}, headers=kb.headers
                )
                assert r.status_code == 200, r.text
            kb.current[("common", "AFTER_ROTATE")] = "new"
            kb.versions[("common", "AFTER_ROTATE", 1)] = "new"

            report = await rewrap(rt, batch=7)
            assert report.rewrapped == len(before)
            assert report.skipped == 0
            assert report.current == new_key
            assert await usage(rt, old_key) == 0
            await read_all_over_http(kb, rt)
            assert await decrypt_every_row(rt) == kb.versions
            return await stored_rows(rt)
        finally:
            await _dispose(rt)

    after = asyncio.run(rotate_phase())
    for row_id, (ct, wrapped, kek) in before.items():
        new_ct, new_wrapped, new_kek = after[row_id]
        assert new_ct == ct, "value ciphertext must be byte-for-byte unchanged"
        assert new_wrapped != wrapped
        assert (kek, new_kek) == (old_key, new_key)

    r = kb.cli("keys", "retire", old_key)
    assert r.exit_code == 0, r.output
    assert f"retired {old_key}" in r.output
    assert kb.key_ids() == [new_key]

    async def after_retire() -> None:
        rt = kb.runtime()
        try:
            assert rt.keys.keyring.ids == (new_key,)
            await read_all_over_http(kb, rt)
            assert await decrypt_every_row(rt) == kb.versions
        finally:
            await _dispose(rt)

    asyncio.run(after_retire())


@pytest.mark.parametrize("stop_after", [1, 5])
def test_a7_interrupted_rewrap_leaves_every_row_readable_and_resumes(
    keyed: KeyedBroker, stop_after: int
) -> None:
    kb = keyed
    old_key = kb.current_key()
    before = _seed(kb)
    total = len(before)
    new_key = rotate_file(kb.key_file, now=utcnow())

    async def interrupted() -> None:
        rt = kb.runtime()
        batches = 0

        def on_batch(_done: int) -> None:
            nonlocal batches
            batches += 1
            if batches == stop_after:
                raise Interrupted

        try:
            with pytest.raises(Interrupted):
                await rewrap(rt, batch=1, on_batch=on_batch)
            # Mixed state: exactly the committed batches moved, the rest still under the old key.
            assert await usage(rt, new_key) == stop_after
            assert await usage(rt, old_key) == total - stop_after
            # Every row decrypts with the keyring holding both keys, directly and over HTTP.
            assert await decrypt_every_row(rt) == kb.versions
            await read_all_over_http(kb, rt)
        finally:
            await _dispose(rt)

    asyncio.run(interrupted())
    mixed = asyncio.run(_rows(kb))
    moved = {row_id for row_id, (_, _, kek) in mixed.items() if kek == new_key}
    assert len(moved) == stop_after
    # The rows moved first are the lowest ids (the job walks in id order, so a rerun resumes).
    assert moved == set(sorted(before)[:stop_after])

    # Retiring is still refused in the mixed state.
    r = kb.cli("keys", "retire", old_key)
    assert r.exit_code != 0
    assert f"still wraps {total - stop_after} data keys" in r.output

    # A rerun (the CLI, as an operator would) finishes the job.
    r = kb.cli("keys", "rewrap", "--batch", "3")
    assert r.exit_code == 0, r.output
    assert f"{total - stop_after} moved, {stop_after} already under {new_key}" in r.output

    async def third_run() -> None:
        rt = kb.runtime()
        try:
            report = await rewrap(rt, batch=1)
            assert (report.rewrapped, report.skipped, report.already) == (0, 0, total)
            assert await usage(rt, old_key) == 0
            assert await decrypt_every_row(rt) == kb.versions
        finally:
            await _dispose(rt)

    asyncio.run(third_run())
    final = asyncio.run(_rows(kb))
    for row_id, (ct, _, _) in before.items():
        assert final[row_id][0] == ct
        assert final[row_id][2] == new_key
    # Rows moved before the interruption were not re-wrapped again by the rerun.
    for row_id in moved:
        assert final[row_id] == mixed[row_id]

    r = kb.cli("keys", "retire", old_key)
    assert r.exit_code == 0, r.output


async def _rows(kb: KeyedBroker) -> dict[int, tuple[bytes, bytes, str]]:
    rt = kb.runtime()
    try:
        return await stored_rows(rt)
    finally:
        await _dispose(rt)


READERS = 8
READERS_PER_BATCH = 2


def test_h47_readers_during_rewrap_see_no_decrypt_failure(keyed: KeyedBroker) -> None:
    kb = keyed
    old_key = kb.current_key()
    before = _seed(kb)
    new_key = rotate_file(kb.key_file, now=utcnow())
    expected = {env: kb.resolved_expected(env) for env in ("common", "production")}
    singles = sorted(kb.current.items())

    async def race() -> tuple[int, int, list[str], list[int]]:
        serving = kb.runtime()  # the restarted broker (both keys)
        job = kb.runtime()  # `strongroom-server keys rewrap`: its own engine, loop and thread
        failures: list[str] = []
        reads = 0
        reads_at_batch: list[int] = []
        stop = asyncio.Event()

        async def reader(i: int) -> None:
            nonlocal reads
            n = i
            async with http(serving) as c:
                while not stop.is_set():
                    n += 1
                    if n % 2:
                        env = "production" if n % 4 == 1 else "common"
                        r = await c.get(f"{BASE}/{env}/resolved", headers=kb.headers)
                        if r.status_code != 200:
                            failures.append(f"resolve {env}: {r.status_code} {r.text[:200]}")
                        elif {k: v["value"] for k, v in r.json()["values"].items()} != expected[env]:
                            failures.append(f"resolve {env}: wrong values")
                    else:
                        (env, name), value = singles[n % len(singles)]
                        r = await c.get(f"{BASE}/{env}/secrets/{name}", headers=kb.headers)
                        if r.status_code != 200:
                            failures.append(f"read {env}/{name}: {r.status_code} {r.text[:200]}")
                        elif r.json()["value"] != value:
                            failures.append(f"read {env}/{name}: wrong value")
                    reads += 1

        def after_batch(_done: int) -> None:
            # Runs in the job's thread between committed batches (the mixed state): wait until the
            # readers have made progress, so reads provably interleave with the job even on SQLite,
            # where a job that re-takes the write lock at once could otherwise starve them.
            # One long deadline for the whole job (not a short one per batch, which a loaded machine can
            # outlive): readers that really starve still fail the gaps assertion below, after at most this.
            target = reads + READERS_PER_BATCH
            while reads < target and time.monotonic() < give_up_at:
                time.sleep(0.002)
            reads_at_batch.append(reads)

        def run_job() -> int:
            async def go() -> int:
                try:
                    return (await rewrap(job, batch=1, on_batch=after_batch)).rewrapped
                finally:
                    await job.engine.dispose()

            return asyncio.run(go())

        try:
            tasks = [asyncio.create_task(reader(i)) for i in range(READERS)]
            while reads < READERS:  # every reader is going before the job starts
                await asyncio.sleep(0.01)
            give_up_at = time.monotonic() + 300
            rewrapped = await asyncio.to_thread(run_job)
            # Keep reading a little after the job, on the fully moved rows.
            target = reads + READERS
            while reads < target:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*tasks)
            return rewrapped, reads, failures, reads_at_batch
        finally:
            await _dispose(serving)

    rewrapped, reads, failures, at_batch = asyncio.run(race())
    assert rewrapped == len(before)
    assert failures == [], failures[:5]
    # Reads really interleaved with the job: between every two batches, readers completed requests.
    assert len(at_batch) == len(before)
    gaps = [b - a for a, b in itertools.pairwise(at_batch)]
    assert min(gaps) >= READERS_PER_BATCH, at_batch
    assert reads > len(before) * READERS_PER_BATCH

    async def check() -> None:
        rt = kb.runtime()
        try:
            assert await usage(rt, old_key) == 0
            assert await usage(rt, new_key) == len(before)
            assert await decrypt_every_row(rt) == kb.versions
        finally:
            await _dispose(rt)

    asyncio.run(check())
