"""Rotation while brokers keep serving (journey 6; issue 12 item 2), on SQLite and PostgreSQL.

A running broker is a runtime that lives across the whole test on one event loop; the operator's
`strongroom-server keys ...` commands run as the CLI does, in a thread (each CLI command runs its own
event loop), against the same database and keyring file. The broker's watcher step (reload a changed
file, report the keys held) is called where the watcher would run it: nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.config import Settings
from broker.files import write_private
from broker.keys import rotate_file
from broker.main import build_runtime, create_app
from broker.models import broker_keyrings
from broker.models import secrets as secrets_table
from broker.services import keys as keys_service
from broker.services.keys import heartbeat
from broker.services.runtime import Runtime, utcnow
from tests.integration.keys.conftest import BASE, KeyedBroker, http, read_all_over_http, seed, stored_rows


async def _cli(kb: KeyedBroker, *args: str) -> tuple[int, str]:
    r = await asyncio.to_thread(kb.cli, *args)
    return r.exit_code, r.output


def test_rotate_then_rewrap_while_a_broker_serves(keyed: KeyedBroker) -> None:
    kb = keyed
    old_key = kb.current_key()
    old_document = kb.key_file.read_text()

    async def go() -> None:
        broker = kb.runtime()  # started before the rotation, never restarted
        unaware = kb.runtime()  # another broker that has not reported its keys (never heartbeats)
        # A broker whose keyring comes from STRONGROOM_KEYRING: nothing to reload.
        inline = build_runtime(Settings(database_url=kb.db_url, data_dir=kb.data_dir, keyring=old_document))
        try:
            await seed(kb, broker)
            await heartbeat(broker)
            rows = len(await stored_rows(broker))

            code, out = await _cli(kb, "keys", "rotate")
            assert code == 0, out
            new_key = kb.current_key()
            assert new_key != old_key and "reload" in out

            # The broker has not picked up the new key: rewrap refuses and names it and the key.
            code, out = await _cli(kb, "keys", "rewrap")
            assert code != 0
            assert "running broker" in out and new_key in out and f"current {old_key}" in out, out
            assert "Nothing was re-wrapped" in out
            assert {kek for _, _, kek in (await stored_rows(broker)).values()} == {old_key}
            await read_all_over_http(kb, broker)

            # Its watcher step: the file changed, so it reloads (and only then: one stat otherwise).
            assert broker.refresh_keys() is True
            assert broker.keys.keyring.current_id == new_key
            assert broker.keys.keyring.ids == (old_key, new_key)
            assert broker.refresh_keys() is False
            await heartbeat(broker)
            # New writes go under the new key at once.
            async with http(broker) as c:
                r = await c.put(
                    f"{BASE}/common/secrets/AFTER_ROTATE", json={"value": "new"}, headers=kb.headers
                )
                assert r.status_code == 200, r.text
            kb.current[("common", "AFTER_ROTATE")] = "new"
            kb.versions[("common", "AFTER_ROTATE", 1)] = "new"

            code, out = await _cli(kb, "keys", "rewrap")
            assert code == 0, out
            assert f"{rows} moved, 1 already under {new_key}" in out, out
            assert {kek for _, _, kek in (await stored_rows(broker)).values()} == {new_key}
            # The broker that kept serving reads everything on every route, without a restart.
            await read_all_over_http(kb, broker)

            # Again: nothing to move, and it says so.
            code, out = await _cli(kb, "keys", "rewrap")
            assert code == 0, out
            assert f"0 moved, {rows + 1} already under {new_key}" in out, out

            # A broker that missed the change reloads on the first row naming a key it lacks.
            assert unaware.keys.keyring.ids == (old_key,)
            await read_all_over_http(kb, unaware)
            assert unaware.keys.keyring.current_id == new_key

            # One that cannot reload reports the missing key as that: 503 naming it, not tampering.
            async with http(inline) as c:
                for url in (f"{BASE}/common/secrets/SECRET_00", f"{BASE}/production/resolved"):
                    r = await c.get(url, headers=kb.headers)
                    assert r.status_code == 503, r.text
                    detail = r.json()["detail"]
                    assert new_key in detail and "integrity" not in detail, detail
        finally:
            for rt in (broker, unaware, inline):
                await rt.engine.dispose()

    asyncio.run(go())

    # Retiring: the current key is refused for that reason; the old one, now unused, goes.
    code = kb.cli("keys", "retire", kb.current_key())
    assert code.exit_code != 0 and "is the current key" in code.output, code.output
    r = kb.cli("keys", "retire", "k-20000101-000000")
    assert r.exit_code != 0 and "not in the keyring" in r.output, r.output
    r = kb.cli("keys", "retire", old_key)
    assert r.exit_code == 0, r.output


def test_a_serving_broker_reports_its_keys_and_forgets_them_on_shutdown(keyed: KeyedBroker) -> None:
    """The app's lifespan: a heartbeat row naming this process's keys before it serves; gone after."""
    kb = keyed
    rt = kb.runtime()

    def rows() -> list[tuple[str, str, list[str]]]:
        async def go() -> list[tuple[str, str, list[str]]]:
            reader = kb.runtime()
            try:
                async with reader.engine.connect() as conn:
                    result = await conn.execute(
                        select(broker_keyrings.c.id, broker_keyrings.c.current_kek, broker_keyrings.c.kek_ids)
                    )
                    return [(r[0], r[1], list(r[2])) for r in result.all()]
            finally:
                await reader.engine.dispose()

        return asyncio.run(go())

    with TestClient(create_app(rt)) as client:
        assert client.get("/healthz").status_code == 200
        live = rows()
        assert live == [(rt.instance, kb.current_key(), [kb.current_key()])]
        assert re.fullmatch(r".+:\d+:[0-9a-f]{8}", rt.instance)
    assert rows() == []


def test_keys_bind_binds_rows_from_before_the_upgrade(keyed: KeyedBroker) -> None:
    """Secrets without a binding (written before schema 0004) are refused until `keys bind` runs once."""
    kb = keyed

    async def seed_and_unbind() -> None:
        rt = kb.runtime()
        try:
            await seed(kb, rt, per_env=3)
            async with rt.engine.begin() as conn:
                await conn.execute(secrets_table.update().values(binding=None))
            async with http(rt) as c:
                r = await c.get(f"{BASE}/common/secrets/SECRET_00", headers=kb.headers)
                assert r.status_code == 500 and "integrity" in r.json()["detail"], r.text
        finally:
            await rt.engine.dispose()

    asyncio.run(seed_and_unbind())
    r = kb.cli("keys", "bind")
    assert r.exit_code == 0, r.output
    assert f"bound {len(kb.current)} secrets" in r.output
    r = kb.cli("keys", "bind")
    assert "bound 0 secrets" in r.output

    async def read_back(rt: Runtime) -> None:
        try:
            await read_all_over_http(kb, rt)
        finally:
            await rt.engine.dispose()

    asyncio.run(read_back(kb.runtime()))


def test_upgrading_to_bindings_binds_the_secrets_already_stored(keyed: KeyedBroker) -> None:
    """A database from before bindings (the schema downgraded past them drops the column) reads again
    right after `db upgrade`, which binds what it finds."""
    kb = keyed

    async def seed_phase() -> None:
        rt = kb.runtime()
        try:
            await seed(kb, rt, per_env=2)
        finally:
            await rt.engine.dispose()

    asyncio.run(seed_phase())
    r = kb.cli("db", "downgrade", "0003")
    assert r.exit_code == 0, r.output
    r = kb.cli("db", "upgrade")
    assert r.exit_code == 0, r.output
    assert f"bound {len(kb.current)} existing secrets" in r.output, r.output
    # An upgrade with nothing to add binds nothing and says nothing about it.
    r = kb.cli("db", "upgrade")
    assert r.exit_code == 0 and "bound" not in r.output, r.output

    async def read_back() -> None:
        rt = kb.runtime()
        try:
            await read_all_over_http(kb, rt)
        finally:
            await rt.engine.dispose()

    asyncio.run(read_back())


def test_a_reload_only_takes_new_keys(keyed: KeyedBroker, caplog: pytest.LogCaptureFixture) -> None:
    """A changed hmac_key (token and client-secret hashes depend on it) or an unreadable file is not
    loaded by a running broker: it keeps its keys and says why, without key material."""
    kb = keyed
    rt = kb.runtime()
    before = rt.keys
    doc = json.loads(kb.key_file.read_text())
    doc["hmac_key"] = base64.b64encode(os.urandom(32)).decode()
    write_private(kb.key_file, json.dumps(doc).encode())
    with caplog.at_level(logging.WARNING, logger="strongroom.keys"):
        assert rt.refresh_keys() is False
    assert rt.keys is before
    assert "hmac_key or audit_key changed" in caplog.text and doc["hmac_key"] not in caplog.text
    write_private(kb.key_file, b"{not json")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="strongroom.keys"):
        assert rt.refresh_keys() is False
    assert rt.keys is before and "not valid JSON" in caplog.text
    asyncio.run(rt.engine.dispose())


def test_the_watcher_reloads_a_rotated_file_and_reports_it(
    keyed: KeyedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pass of the broker's background watcher (its check interval set to 0, and stopped by the
    reload itself, so nothing waits on a clock): the rotated file is loaded and the new keys reported."""
    kb = keyed
    monkeypatch.setattr(keys_service, "KEY_CHECK_SECONDS", 0)

    async def go() -> tuple[list[tuple[str, list[str]]], str]:
        rt = kb.runtime()
        try:
            await heartbeat(rt)
            new_key = rotate_file(kb.key_file, now=utcnow())
            stop = asyncio.Event()
            real = rt.refresh_keys

            def refresh_once() -> bool:
                stop.set()  # the watcher finishes the pass it is in, then stops
                return real()

            monkeypatch.setattr(rt, "refresh_keys", refresh_once)
            await keys_service.watch(rt, stop)
            assert rt.keys.keyring.current_id == new_key
            async with rt.engine.connect() as conn:
                result = await conn.execute(select(broker_keyrings.c.current_kek, broker_keyrings.c.kek_ids))
                return [(r[0], list(r[1])) for r in result.all()], new_key
        finally:
            await rt.engine.dispose()

    rows, new_key = asyncio.run(go())
    assert rows == [(new_key, kb.key_ids())]
