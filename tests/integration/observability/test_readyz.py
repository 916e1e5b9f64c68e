"""/readyz: database, keyring, audit sinks and checkpoint directory, each named; 503 naming the failing
check, never a path or a value; unaudited like /up. A real broker app; real failures (a directory where
the audit file was, a file where the checkpoint directory was, a KMS endpoint nothing listens on, a
PostgreSQL database that refuses connections)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.keys import new_document, rotate_file
from broker.main import build_runtime, create_app
from broker.services import health
from broker.services.runtime import Runtime, utcnow
from tests.conftest import make_settings
from tests.support import pg
from tests.support.ports import closed_port

CHECKS = {"database", "keyring", "audit_sinks", "checkpoint_directory"}


def audit_rows(client: TestClient, rt: Runtime) -> int:
    async def count() -> int:
        async with rt.engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one())

    return int(client.portal.call(count))  # type: ignore[union-attr]


@pytest.fixture
def broker(db_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, TestClient]]:
    (tmp_path / "audit").mkdir(mode=0o700)
    rt = build_runtime(make_settings(db_url, tmp_path, audit_file=tmp_path / "audit" / "events.jsonl"))
    with TestClient(create_app(rt), client=("127.0.0.1", 50000)) as client:
        yield rt, client


def test_ready_when_every_check_passes_and_not_audited(broker: tuple[Runtime, TestClient]) -> None:
    rt, client = broker
    before = audit_rows(client, rt)
    r = client.get("/readyz", headers={"X-Request-Id": "probe-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": dict.fromkeys(CHECKS, "ok"), "failing": []}
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # the broker's own id, not the caller's
    assert r.headers["cache-control"] == "no-store"
    assert audit_rows(client, rt) == before
    assert client.get("/up").json() == {"status": "ok"}  # liveness unchanged


def test_audit_sink_failing_is_named_without_its_path(
    broker: tuple[Runtime, TestClient], tmp_path: Path
) -> None:
    _, client = broker
    sink = tmp_path / "audit" / "events.jsonl"
    sink.unlink(missing_ok=True)
    sink.mkdir()
    r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["failing"] == ["audit_sinks"]
    assert r.json()["checks"]["database"] == "ok"
    assert str(tmp_path) not in r.text and "events.jsonl" not in r.text
    sink.rmdir()
    assert client.get("/readyz").status_code == 200  # recovers with the sink


def test_checkpoint_directory_not_writable(broker: tuple[Runtime, TestClient], tmp_path: Path) -> None:
    rt, client = broker
    directory = rt.audit.checkpoints.path
    shutil.rmtree(directory)
    directory.write_text("not a directory\n")  # the tests run as root: modes would not stop a write
    r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["failing"] == ["checkpoint_directory"]
    assert str(directory) not in r.text


def test_keyring_whose_current_key_is_unreachable(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current key is an AWS KMS key at an endpoint nothing listens on: it cannot seal, so not ready."""
    from tests.conftest import sqlite_db

    key_file = tmp_path / "keyring.json"
    key_file.write_text(json.dumps(new_document(utcnow(), dev=False)))
    key_file.chmod(0o600)
    # Probes share one answer per REMOTE_KEY_CHECK_EVERY seconds of real time: made far longer than the
    # test can take, so a loaded machine cannot let a second probe through between the requests.
    monkeypatch.setattr(health, "REMOTE_KEY_CHECK_EVERY", 3600.0)
    with closed_port() as port:
        entry: dict[str, Any] = {
            "type": "aws-kms",
            "key_id": "alias/strongroom-readyz",
            "region": "us-east-1",
            "endpoint_url": f"http://127.0.0.1:{port}",
            "credentials": {"access_key_id": "testing", "secret_access_key": "testing"},
            "allow_networks": ["127.0.0.0/8"],
            "max_attempts": 1,
        }
        rotate_file(key_file, now=utcnow(), entry=entry)
        settings = make_settings(sqlite_db(tmp_path / "broker.db", sqlite_template), tmp_path).model_copy(
            update={"keyring": None, "key_file": key_file}
        )
        rt = build_runtime(settings)
        calls: list[Runtime] = []
        real = health._seal_and_open

        def counted(runtime: Runtime) -> None:
            calls.append(runtime)
            real(runtime)

        with TestClient(create_app(rt), client=("127.0.0.1", 50000)) as client:
            monkeypatch.setattr(health, "_seal_and_open", counted)
            r = client.get("/readyz")
            # Anyone may probe: a flood of probes reaches the key service once per interval, not once each.
            again = [client.get("/readyz") for _ in range(5)]
        assert r.status_code == 503, r.text
        assert r.json()["failing"] == ["keyring"]
        assert "127.0.0.1" not in r.text and "testing" not in r.text
        assert [a.json()["failing"] for a in again] == [["keyring"]] * 5
        assert len(calls) == 1


@pytest.mark.postgres
def test_database_refusing_connections(pg_cluster: pg.Cluster, tmp_path: Path) -> None:
    name = f"readyz_{secrets.token_hex(6)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE strongroom_template")
    rt = build_runtime(make_settings(pg_cluster.url(name), tmp_path))
    with TestClient(create_app(rt), client=("127.0.0.1", 50000)) as client:
        assert client.get("/readyz").status_code == 200
        pg_cluster.psql(f"ALTER DATABASE {name} CONNECTION LIMIT 0")
        pg_cluster.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert "database" in r.json()["failing"]
        assert name not in r.text and "postgres" not in r.text
        pg_cluster.psql(f"ALTER DATABASE {name} CONNECTION LIMIT -1")
