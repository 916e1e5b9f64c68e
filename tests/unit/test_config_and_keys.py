"""Settings refuse insecure production set-ups; key sources fail with a message naming the field."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from broker import keys
from broker.cli import main as server_cli
from broker.config import Settings
from broker.errors import Invalid

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_production_refuses_missing_key_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="STRONGROOM_KEYRING or STRONGROOM_KEY_FILE"):
        Settings(production=True, data_dir=tmp_path, database_url="postgresql://x@h/db")


def test_production_refuses_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PostgreSQL"):
        Settings(production=True, data_dir=tmp_path, keyring="{}")


def test_production_refuses_the_dev_keyring(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(keys.new_document(NOW, dev=True)))
    path.chmod(0o600)
    settings = Settings(production=True, key_file=path, database_url="postgresql://x@h/db")
    with pytest.raises(Invalid, match="development keyring is refused"):
        keys.load(settings, now=NOW, create_dev=False)


def test_dev_keyring_is_created_0600_on_the_embedded_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    material, created = keys.load(settings, now=NOW, create_dev=True)
    assert created and material.dev
    assert (tmp_path / "data" / "dev-keyring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    again, created_again = keys.load(settings, now=NOW, create_dev=True)
    assert not created_again and again.keyring.current_id == material.keyring.current_id


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(keys.new_document(NOW, dev=False)))
    path.chmod(0o644)
    with pytest.raises(Invalid, match="chmod 600"):
        keys.load(Settings(key_file=path), now=NOW, create_dev=False)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(keys={}), "keys"),
        (lambda d: d.update(current="nope"), "current"),
        (lambda d: d.update(hmac_key=base64.b64encode(b"short").decode()), "hmac_key"),
        (lambda d: d["keys"].update({d["current"]: "!!notbase64"}), "keys."),
    ],
)
def test_bad_keyring_documents_name_the_field_and_never_echo_keys(mutate: object, field: str) -> None:
    doc = keys.new_document(NOW, dev=False)
    secret_material = [*doc["keys"].values(), doc["hmac_key"]]
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(Invalid) as err:
        keys.parse_document(json.dumps(doc), source="test")
    assert field in str(err.value)
    for material in secret_material:
        assert material not in str(err.value)


def test_key_material_repr_is_redacted() -> None:
    doc = keys.new_document(NOW, dev=False)
    material = keys.parse_document(json.dumps(doc), source="test")
    text = repr(material)
    assert doc["hmac_key"] not in text
    assert all(v not in text for v in doc["keys"].values())


def test_rotate_and_retire_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    runner = CliRunner()
    result = runner.invoke(server_cli, ["keys", "generate", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert all(v not in result.output for v in doc["keys"].values())
    refused = runner.invoke(server_cli, ["keys", "generate", "--out", str(path)])
    assert refused.exit_code != 0 and "refusing to overwrite" in refused.output
    old = doc["current"]
    new = keys.rotate_file(path, now=NOW)
    doc2 = json.loads(path.read_text())
    assert doc2["current"] == new != old and set(doc2["keys"]) == {old, new}
    assert doc2["keys"][old] == doc["keys"][old]
    with pytest.raises(Invalid, match="is current"):
        keys.retire_from_file(path, new)
    keys.retire_from_file(path, old)
    assert set(json.loads(path.read_text())["keys"]) == {new}
    assert path.stat().st_mode & 0o777 == 0o600


def test_write_private_replaces_a_world_readable_file(tmp_path: Path) -> None:
    from broker.files import write_private

    target = tmp_path / "sub" / "f"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["f"], "no temp file left behind"


def test_create_private_never_replaces_a_file(tmp_path: Path) -> None:
    """The exclusive writer (two brokers may race to create the development signing key) creates a new
    file 0600 in a new 0700 directory, and leaves an existing one exactly as it was."""
    from broker.files import create_private

    target = tmp_path / "data" / "key.pem"
    assert create_private(target, b"first") is True
    assert target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert create_private(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["key.pem"], "no temp file left behind"
