"""A new user follows the README against a real broker process: set up, log in, store, read, run."""

from __future__ import annotations

import json
import secrets
import stat
import sys
from pathlib import Path

from tests.e2e.conftest import BrokerProcess, start, stop


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tricky_canary() -> str:
    """A value that breaks naive quoting: dollar, hash, quotes, backslash, newline, unicode."""
    return f"CANARY{secrets.token_hex(8)} $HOME #x 'q' \"dq\" \\n\nline2 ü"


def login(broker: BrokerProcess) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    out = broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr


def test_embedded_default_files_are_private_and_login_hint_printed_once(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    log = broker.server_output()
    assert "DEVELOPMENT KEY" in log
    assert "strongroom login --url" in log and "--secret-file" in log
    assert _mode(broker.data_dir) == 0o700
    for name in ("strongroom.db", "dev-keyring.json", "bootstrap-admin.secret"):
        assert _mode(broker.data_dir / name) == 0o600, name
    secret = (broker.data_dir / "bootstrap-admin.secret").read_text().strip()
    assert secret not in log, "the bootstrap secret must go to the 0600 file, not the terminal"
    stop(broker)
    again = start(broker.data_dir, tmp_path / "home" / ".config", tmp_path / "second.log")
    try:
        assert "Bootstrap admin created" not in again.server_output()
    finally:
        stop(again)


def test_new_user_journey(broker: BrokerProcess, tmp_path: Path) -> None:
    login(broker)
    creds = list((tmp_path / "home" / ".config" / "strongroom").glob("*"))
    assert creds, "login caches a credential"
    for path in creds:
        assert _mode(path) == 0o600
    assert _mode(tmp_path / "home" / ".config" / "strongroom") == 0o700

    assert broker.cli("projects", "create", "microblog").returncode == 0
    assert broker.cli("envs", "create", "-p", "microblog", "common").returncode == 0
    out = broker.cli("envs", "create", "-p", "microblog", "staging", "--parent", "common")
    assert out.returncode == 0, out.stderr

    canary = tricky_canary()
    out = broker.cli(
        "secrets", "set", "-p", "microblog", "-e", "common", "DATABASE_URL", input=canary.encode()
    )
    assert out.returncode == 0, out.stderr
    key_base = secrets.token_hex(32)
    out = broker.cli(
        "secrets", "set", "-p", "microblog", "-e", "staging", "SECRET_KEY_BASE", input=key_base.encode()
    )
    assert out.returncode == 0, out.stderr

    listed = broker.cli("secrets", "list", "-p", "microblog", "-e", "common")
    assert listed.returncode == 0 and "DATABASE_URL" in listed.stdout

    masked = broker.cli("secrets", "get", "-p", "microblog", "-e", "common", "DATABASE_URL")
    assert masked.returncode == 0
    revealed = broker.cli("secrets", "get", "-p", "microblog", "-e", "common", "DATABASE_URL", "--reveal")
    assert revealed.returncode == 0
    assert revealed.stdout.rstrip("\n") == canary.rstrip("\n") or revealed.stdout == canary

    # The value reaches the child process byte for byte, inherited from common.
    probe = tmp_path / "probe.json"
    script = f"import json,os,sys; json.dump(dict(os.environ), open({str(probe)!r},'w')); sys.exit(7)"
    ran = broker.cli("run", "-p", "microblog", "-e", "staging", "--", sys.executable, "-c", script)
    assert ran.returncode == 7, ran.stderr
    seen = json.loads(probe.read_text())
    assert seen["DATABASE_URL"] == canary
    assert seen["SECRET_KEY_BASE"] == key_base

    # A value on the command line is refused and never echoed.
    refused = broker.cli("secrets", "set", "-p", "microblog", "-e", "common", "API_KEY", canary)
    assert refused.returncode == 2
    history = broker.cli("secrets", "history", "-p", "microblog", "-e", "common", "DATABASE_URL")
    assert history.returncode == 0

    # Logging out revokes the token at the broker, not just locally.
    cached = {}
    for path in creds:
        try:
            cached = json.loads(path.read_text())
        except ValueError:
            continue
    token = cached.get("token")
    assert token
    assert broker.cli("logout").returncode == 0
    after = broker.cli(
        "secrets",
        "list",
        "-p",
        "microblog",
        "-e",
        "common",
        env={"STRONGROOM_TOKEN": token, "STRONGROOM_URL": broker.url},
    )
    assert after.returncode == 1

    # Canaries: only the --reveal output and the child's environment ever held the value.
    for text in [*broker.outputs, broker.server_output()]:
        if text is revealed.stdout:
            continue
        assert canary.splitlines()[0] not in text
        assert key_base not in text
