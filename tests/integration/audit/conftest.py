"""Fixtures for the audit tests: a broker on SQLite and PostgreSQL with chosen audit settings, and helpers
to read, mutate and verify the chain in the real database (always on the app's own event loop)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.signing import checkpoint_dir
from broker.audit.verify import Report
from broker.config import Settings
from broker.main import build_runtime, create_app
from broker.models import audit_events
from broker.services.audit import chaining
from broker.services.auth import bootstrap_admin
from broker.services.runtime import Runtime
from tests.conftest import keyring_json
from tests.integration.secrets.conftest import CLIENT_ADDR, PROJECT, Api

ADMIN_UA = {"User-Agent": "strongroom-cli/0.1.0"}


@dataclass
class AuditApi(Api):
    """The secrets test helpers plus the audit chain's."""

    tmp: Path = Path()

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.rt.settings)

    def chain(self) -> chaining.ChainPass:
        result: chaining.ChainPass = self.run(chaining.chain, self.rt)
        return result

    def checkpoint(self) -> SignedCheckpoint | None:
        result: SignedCheckpoint | None = self.run(chaining.checkpoint_now, self.rt)
        return result

    def verify(self) -> Report:
        report: Report = self.run(chaining.verify_database, self.rt)
        return report

    def linked(self) -> list[dict[str, Any]]:
        """Every linked event, in sequence order."""

        async def go() -> list[dict[str, Any]]:
            async with self.rt.engine.connect() as conn:
                rows = await conn.execute(
                    select(audit_events).where(audit_events.c.seq.is_not(None)).order_by(audit_events.c.seq)
                )
                return [dict(r._mapping) for r in rows.all()]

        return list(self.run(go))

    def checkpoint_rows(self) -> list[tuple[int, str]]:
        """(seq, document) of the checkpoints table, oldest first."""
        return [
            (int(r[0]), str(r[1]))
            for r in self.query(text("SELECT seq, document FROM audit_checkpoints ORDER BY seq"))
        ]

    def sql(self, statement: str, **params: Any) -> int:
        """Run raw SQL in its own transaction, as someone with write access to the database would."""

        async def go() -> int:
            async with self.rt.engine.begin() as conn:
                return int((await conn.execute(text(statement), params)).rowcount)

        return int(self.run(go))

    def traffic(self, n: int = 6) -> None:
        """Some varied requests: writes, reads, failures."""
        for i in range(n):
            assert self.put("common", f"K{i % 3}", f"value-{i}").status_code == 200
            assert self.get("common", f"K{i % 3}").status_code == 200
        assert self.get("common", "MISSING").status_code == 404

    def export(self, **params: str) -> bytes:
        r = self.client.get("/v1/audit/export", params=params, headers=self.h)
        assert r.status_code == 200, r.text
        return r.content

    def public_key_file(self) -> Path:
        path = self.tmp / "audit-public.pem"
        path.write_bytes(self.rt.audit.signer.public.pem())
        return path


def cli_verify(export: Path, public_key: Path, *checkpoints: Path, extra: Sequence[str] = ()) -> Any:
    """`strongroom audit verify` as an auditor runs it: offline, no broker, no login."""
    from cli.root import strongroom

    args = ["audit", "verify", str(export), "--public-key", str(public_key), *extra]
    for path in checkpoints:
        args += ["--checkpoints", str(path)]
    return CliRunner().invoke(
        strongroom, args, env={"STRONGROOM_TOKEN": "", "XDG_CONFIG_HOME": str(export.parent)}
    )


@contextlib.contextmanager
def broker(db_url: str, tmp_path: Path, **settings: Any) -> Iterator[AuditApi]:
    """A broker (lifespan run: start-up check, chainer) with project microblog (common, production)."""
    keyring = tmp_path / "keyring.json"  # the same keys across restarts of this test's broker
    if not keyring.exists():
        keyring.write_text(keyring_json())
    rt = build_runtime(
        Settings(database_url=db_url, data_dir=tmp_path / "data", keyring=keyring.read_text(), **settings)
    )
    with TestClient(create_app(rt), client=CLIENT_ADDR, headers=ADMIN_UA) as client:
        api = login(client, rt, tmp_path)
        yield api


def login(client: TestClient, rt: Runtime, tmp_path: Path) -> AuditApi:
    """Bootstrap the admin (if needed) and log in; create the project the first time."""
    created = client.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
    secret_file = tmp_path / "admin.secret"
    if created is not None:
        secret_file.write_text(created.client_secret)
    r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": secret_file.read_text()})
    assert r.status_code == 200, r.text
    api = AuditApi(client=client, rt=rt, h={"Authorization": f"Bearer {r.json()['token']}"}, tmp=tmp_path)
    if created is not None:
        api.make_project(PROJECT)
        api.make_env("common")
        api.make_env("production", parent="common")
    return api


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[AuditApi]:
    """A broker with default audit settings."""
    with broker(db_url, tmp_path) as a:
        yield a


def lines(data: bytes) -> list[dict[str, Any]]:
    """JSON lines as objects (each line must be exactly one object)."""
    return [json.loads(ln) for ln in data.splitlines() if ln.strip()]
