"""`strongroom-server audit keygen | public-key | checkpoint | verify | prune` against a real database."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli import main as server_cli
from broker.config import get_settings
from tests.integration.audit.conftest import broker


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_server_audit_commands(db_url: str, tmp_path: Path, fresh_settings: None) -> None:
    runner = CliRunner()
    key = tmp_path / "keys" / "audit.pem"
    done = runner.invoke(server_cli, ["audit", "keygen", "--out", str(key)])
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() not in done.output
    public = key.with_name("audit.pem.pub.pem")
    assert "ed25519:" in done.output and public.exists()
    assert runner.invoke(server_cli, ["audit", "keygen", "--out", str(key)]).exit_code != 0

    with broker(db_url, tmp_path, audit_signing_key_file=key) as api:
        api.traffic(2)
        keyring = (tmp_path / "keyring.json").read_text()
    env = {
        "STRONGROOM_DATABASE_URL": db_url,
        "STRONGROOM_KEYRING": keyring,
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
        "STRONGROOM_AUDIT_SIGNING_KEY_FILE": str(key),
    }
    done = runner.invoke(server_cli, ["audit", "public-key"], env=env)
    assert done.exit_code == 0 and done.output == public.read_text()
    done = runner.invoke(server_cli, ["audit", "checkpoint"], env=env)
    assert done.exit_code == 0 and "checkpoint at seq" in done.output, done.output
    done = runner.invoke(server_cli, ["audit", "checkpoint"], env=env)
    assert "nothing new to sign" in done.output
    done = runner.invoke(server_cli, ["audit", "verify"], env=env)
    assert done.exit_code == 0 and done.output.startswith("ok: "), done.output
    done = runner.invoke(server_cli, ["audit", "verify", "--json", "--public-key", str(public)], env=env)
    assert done.exit_code == 0 and '"ok": true' in done.output
    done = runner.invoke(server_cli, ["audit", "prune", "--older-than", "1"], env=env)
    assert done.exit_code == 0 and "nothing to prune" in done.output
    with broker(db_url, tmp_path, audit_signing_key_file=key) as api:
        api.sql("UPDATE audit_events SET reason = 'edited' WHERE seq = 3")
    done = runner.invoke(server_cli, ["audit", "verify"], env=env)
    assert done.exit_code == 1 and "FAILED at seq 3:" in done.output
