"""C64: every refusal to start (`strongroom-server serve` and the admin commands) is one sentence naming
the setting, with no value, no URL password and no traceback; and C64's loose file modes (issue 12 item 8):
a data directory, database or WAL file open to other users is refused like a loose keyring.

Each case runs the real `strongroom-server` as a subprocess and reads its stderr.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.audit.checkpoint import Signer
from broker.audit.sinks import CheckpointDirectory
from tests.conftest import keyring_json
from tests.support import pg
from tests.support.ports import closed_port, free_port

BIN = Path(sys.executable).parent
CANARY = "Hunter2" + secrets.token_hex(6)


def server(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `strongroom-server ARGS` with only these STRONGROOM_* settings; never waits on a server."""
    base = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
    }
    if "PYTHONPATH" in os.environ:  # a work tree under test, not the installed copy
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [str(BIN / "strongroom-server"), *args],
        env={**base, **{f"STRONGROOM_{k.upper()}": v for k, v in env.items()}},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def one_sentence(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """The single error line of a failed run, after checking it names every one of `names`."""
    assert done.returncode != 0, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("Error: "), line
    assert "Traceback" not in line and "input_value" not in line
    assert CANARY not in done.stderr + done.stdout
    for name in names:
        assert name in line, line
    return line


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An audit signing key file, so that admin commands print no development-key notice first (one per
    module: the commands only read it)."""
    home = tmp_path_factory.mktemp("signing")
    out = home / "keys" / "audit.pem"
    done = server(home, "audit", "keygen", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return str(out)


def test_a_production_settings_error_names_the_setting_and_not_the_database_password(tmp_path: Path) -> None:
    url = f"postgresql://u:{CANARY}@db.example/d"
    line = one_sentence(
        server(tmp_path, "serve", production="true", database_url=url, port="abc"), "STRONGROOM_PORT"
    )
    assert "abc" not in line
    one_sentence(server(tmp_path, "serve", production="true", database_url=url), "STRONGROOM_KEYRING")
    one_sentence(
        server(tmp_path, "db", "upgrade", production="true", database_url=url), "STRONGROOM_KEY_FILE"
    )


def test_a_bad_trusted_proxy_is_named_without_echoing_it(tmp_path: Path) -> None:
    line = one_sentence(
        server(tmp_path, "serve", trusted_proxies=f'["10.0.0.0/8", "{CANARY}"]'), "STRONGROOM_TRUSTED_PROXIES"
    )
    assert "entry 2" in line


def test_a_mysql_url_is_refused_as_such_not_as_a_missing_keyring(tmp_path: Path) -> None:
    line = one_sentence(
        server(tmp_path, "serve", database_url=f"mysql://u:{CANARY}@db.example/d"), "STRONGROOM_DATABASE_URL"
    )
    assert "postgresql://" in line and "keyring" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["db", "upgrade"],
        ["db", "current"],
        ["bootstrap"],
        ["keys", "rewrap"],
        ["audit", "verify"],
    ],
)
def test_an_unreachable_database_is_one_sentence_for_every_command(
    tmp_path: Path, signing_key: str, command: list[str]
) -> None:
    with closed_port() as port:
        url = f"postgresql://strongroom:{CANARY}@127.0.0.1:{port}/strongroom"
        done = server(
            tmp_path, *command, database_url=url, keyring=keyring_json(), audit_signing_key_file=signing_key
        )
    line = one_sentence(done, "STRONGROOM_DATABASE_URL", "connection refused")
    assert "127.0.0.1" not in line


def test_an_unresolvable_host_is_one_sentence(tmp_path: Path, signing_key: str) -> None:
    url = f"postgresql://strongroom:{CANARY}@strongroom-db.invalid/strongroom"
    done = server(
        tmp_path, "serve", database_url=url, keyring=keyring_json(), audit_signing_key_file=signing_key
    )
    one_sentence(done, "STRONGROOM_DATABASE_URL", "does not resolve")


def test_a_schema_behind_is_one_sentence_naming_the_upgrade_sqlite(tmp_path: Path, signing_key: str) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    settings = {"database_url": url, "keyring": keyring_json(), "audit_signing_key_file": signing_key}
    assert server(tmp_path, "db", "upgrade", "0001", **settings).returncode == 0
    line = one_sentence(server(tmp_path, "serve", **settings), "STRONGROOM_DATABASE_URL", "db upgrade")
    assert "0001" in line


def test_an_empty_postgresql_database_is_one_sentence(
    tmp_path: Path, signing_key: str, pg_cluster: pg.Cluster
) -> None:
    name = f"empty_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name}")
    url = pg_cluster.url(name).replace("postgresql+asyncpg://", "postgresql://")
    done = server(
        tmp_path, "serve", database_url=url, keyring=keyring_json(), audit_signing_key_file=signing_key
    )
    line = one_sentence(done, "STRONGROOM_DATABASE_URL", "db upgrade")
    assert "at nothing" in line


# -- file modes: the data directory, the database and its WAL are held to the keyring's rule --


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory the broker set up itself (0700, database 0600), then shut down; made once per module."""
    home = tmp_path_factory.mktemp("embedded")
    done = server(home, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return home / "data"


def _embedded(template: Path, tmp_path: Path) -> Path:
    """This test's copy of the template, modes kept (copytree copies each file's and directory's mode)."""
    data = Path(shutil.copytree(template, tmp_path / "data"))
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "strongroom.db").stat().st_mode & 0o777 == 0o600
    return data


@pytest.mark.parametrize(
    ("relative", "mode", "fix"),
    [
        ("", 0o755, "chmod 700"),
        ("strongroom.db", 0o644, "chmod 600"),
        ("strongroom.db-wal", 0o644, "chmod 600"),
        ("strongroom.db-shm", 0o640, "chmod 600"),
        ("dev-keyring.json", 0o644, "chmod 600"),
    ],
)
def test_a_private_path_open_to_others_is_refused_naming_it_and_the_fix(
    embedded_template: Path, tmp_path: Path, relative: str, mode: int, fix: str
) -> None:
    data = _embedded(embedded_template, tmp_path)
    path = data / relative if relative else data
    if not path.exists():
        path.touch(mode=0o600)
    path.chmod(mode)
    for command in (["serve"], ["db", "upgrade"]):
        one_sentence(server(tmp_path, *command), str(path), fix, f"mode {mode:o}")
    path.chmod(0o700 if path.is_dir() else 0o600)
    assert server(tmp_path, "db", "upgrade").returncode == 0


def test_the_wal_files_sqlite_creates_are_private(embedded_template: Path, tmp_path: Path) -> None:
    data = _embedded(embedded_template, tmp_path)
    # bootstrap writes through the broker's SQLite connection, in WAL mode.
    done = server(tmp_path, "bootstrap", keyring=keyring_json())
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(data / "strongroom.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (data / "strongroom.db-wal").exists()
    for path in data.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path


def test_an_unknown_revision_names_the_argument(tmp_path: Path) -> None:
    one_sentence(server(tmp_path, "db", "upgrade", "nosuchrev"), "REVISION", "nosuchrev")


def test_an_sqlite_file_that_cannot_be_opened_is_one_sentence(tmp_path: Path, signing_key: str) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    done = server(
        tmp_path, "serve", database_url=url, keyring=keyring_json(), audit_signing_key_file=signing_key
    )
    one_sentence(done, "STRONGROOM_DATABASE_URL", "SQLite file")


# -- the audit outputs: checked before the server starts, so a failure is `serve`'s own one sentence --


def _audit_dir_is_a_file(tmp_path: Path) -> dict[str, str]:
    plain = tmp_path / "not-a-directory"
    plain.write_text("x")
    return {"audit_checkpoint_dir": str(plain)}


def _audit_file_in_a_missing_directory(tmp_path: Path) -> dict[str, str]:
    return {"audit_file": str(tmp_path / "missing" / "audit.log")}


def _audit_file_readable_by_others(tmp_path: Path) -> dict[str, str]:
    loose = tmp_path / "audit.log"
    loose.touch(mode=0o644)
    loose.chmod(0o644)
    return {"audit_file": str(loose)}


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (_audit_dir_is_a_file, "STRONGROOM_AUDIT_CHECKPOINT_DIR"),
        (_audit_file_in_a_missing_directory, "STRONGROOM_AUDIT_FILE"),
        (_audit_file_readable_by_others, "STRONGROOM_AUDIT_FILE"),
    ],
)
def test_an_audit_output_that_cannot_be_used_is_one_sentence_naming_its_setting(
    tmp_path: Path, signing_key: str, make: Any, setting: str
) -> None:
    """Before the check ran ahead of uvicorn, the broker printed its address, then uvicorn's two ERROR
    lines ("audit: EEXIST (File exists)" for a checkpoint directory that is a file, naming nothing)."""
    extra = make(tmp_path)
    done = server(
        tmp_path,
        "serve",
        port=str(free_port()),
        keyring=keyring_json(),
        audit_signing_key_file=signing_key,
        **extra,
    )
    one_sentence(done, setting, next(iter(extra.values())))
    assert "strongroom broker on" not in done.stderr


def test_a_database_behind_the_last_checkpoint_is_one_sentence(tmp_path: Path, signing_key: str) -> None:
    """C12 at `serve`: a checkpoint (validly signed) vouches for more events than the database holds, as after
    restoring an older backup. Before the check ran ahead of uvicorn the sentence came framed in uvicorn's
    ERROR lines after the broker's address."""
    checkpoints = tmp_path / "checkpoints"
    signer = Signer.from_pem(Path(signing_key).read_bytes())
    signed = signer.sign(seq=10_000, head="0" * 64, time="2026-01-01T00:00:00.000000Z")
    CheckpointDirectory(checkpoints).write(signed)
    done = server(
        tmp_path,
        "serve",
        port=str(free_port()),
        keyring=keyring_json(),
        audit_signing_key_file=signing_key,
        audit_checkpoint_dir=str(checkpoints),
    )
    one_sentence(done, "behind the last checkpoint", "STRONGROOM_AUDIT_ON_ROLLBACK")
    assert "strongroom broker on" not in done.stderr
