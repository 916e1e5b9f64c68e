"""The CLI of issue 5 against a real broker process: journeys 2 and 3, canaries, reveals, files, signals, clocks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import BIN, BrokerProcess

pytestmark = pytest.mark.e2e


def canary() -> str:
    return f"CANARY{secrets.token_hex(12)}"


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out


@pytest.fixture
def admin(broker: BrokerProcess) -> BrokerProcess:
    """The bootstrap admin logged in, with project microblog: common <- staging, common <- production."""
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    ok(broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)))
    ok(broker.cli("projects", "create", "microblog"))
    ok(broker.cli("envs", "create", "-p", "microblog", "common"))
    ok(broker.cli("envs", "create", "-p", "microblog", "staging", "--parent", "common"))
    ok(broker.cli("envs", "create", "-p", "microblog", "production", "--parent", "common"))
    return broker


def audit_actions(broker: BrokerProcess) -> list[tuple[str, str | None, str]]:
    """(action, secret_name, outcome) of every audit event so far, oldest first."""
    with sqlite3.connect(broker.data_dir / "strongroom.db") as db:
        rows = db.execute("SELECT action, secret_name, outcome FROM audit_events ORDER BY id").fetchall()
    return [(str(a), n, str(o)) for a, n, o in rows]


def dump_env(path: Path) -> str:
    return f"import json, os; json.dump(dict(os.environ), open({str(path)!r}, 'w'))"


# --- journey 2: the generated SECRET_KEY_BASE, the same every time


def test_generate_once_and_every_run_sees_the_same_value(admin: BrokerProcess, tmp_path: Path) -> None:
    first = ok(admin.cli("secrets", "generate", "-p", "microblog", "-e", "common", "SECRET_KEY_BASE"))
    again = ok(admin.cli("secrets", "generate", "-p", "microblog", "-e", "common", "SECRET_KEY_BASE"))
    assert "Generated microblog/common/SECRET_KEY_BASE" in first.stdout
    assert "already exists (version 1); left unchanged" in again.stdout

    seen = []
    for i in range(2):
        probe = tmp_path / f"env{i}.json"
        ok(admin.cli("run", "-p", "microblog", "-e", "staging", "--", sys.executable, "-c", dump_env(probe)))
        seen.append(json.loads(probe.read_text())["SECRET_KEY_BASE"])
    assert seen[0] == seen[1] and len(seen[0]) == 128 and int(seen[0], 16) >= 0
    for out in (first, again):
        assert seen[0] not in out.stdout + out.stderr

    rotated = ok(
        admin.cli("secrets", "generate", "-p", "microblog", "-e", "common", "SECRET_KEY_BASE", "--rotate")
    )
    assert "Rotated microblog/common/SECRET_KEY_BASE: the broker generated version 2." in rotated.stdout
    shown = ok(admin.cli("secrets", "get", "-p", "microblog", "-e", "common", "SECRET_KEY_BASE", "--reveal"))
    assert shown.stdout != seen[0] and len(shown.stdout) == 128


# --- canaries, reveals and the command line


def test_canaries_never_appear_without_reveal_and_reveals_are_audited(
    admin: BrokerProcess, tmp_path: Path
) -> None:
    value = canary() + " $HOME 'q'"
    ok(
        admin.cli(
            "secrets", "set", "-p", "microblog", "-e", "production", "DB_PASSWORD", input=value.encode()
        )
    )
    quiet = [
        admin.cli("secrets", "list", "-p", "microblog", "-e", "production"),
        admin.cli("secrets", "list", "-p", "microblog", "-e", "production", "--json"),
        admin.cli("secrets", "get", "-p", "microblog", "-e", "production", "DB_PASSWORD"),
        admin.cli("secrets", "get", "-p", "microblog", "-e", "production", "DB_PASSWORD", "--json"),
        admin.cli("secrets", "history", "-p", "microblog", "-e", "production", "DB_PASSWORD"),
        admin.cli(
            "export",
            "-p",
            "microblog",
            "-e",
            "production",
            "--format",
            "json",
            "--out",
            str(tmp_path / "v.json"),
        ),
        admin.cli("export", "-p", "microblog", "-e", "production", "--format", "json"),
        admin.cli("tokens", "list"),
        admin.cli("profiles", "list"),
    ]
    for out in quiet:
        assert value not in out.stdout + out.stderr, out.args
    assert stat.S_IMODE((tmp_path / "v.json").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "v.json").read_text())["DB_PASSWORD"] == value

    before = len(audit_actions(admin))
    shown = ok(admin.cli("secrets", "get", "-p", "microblog", "-e", "production", "DB_PASSWORD", "--reveal"))
    exported = ok(admin.cli("export", "-p", "microblog", "-e", "production", "--format", "json", "--reveal"))

    assert shown.stdout == value
    assert json.loads(exported.stdout)["DB_PASSWORD"] == value
    events = audit_actions(admin)[before:]
    assert [(a, n, o) for a, n, o in events if a.startswith("secret.")] == [
        ("secret.reveal", "DB_PASSWORD", "ok"),
        ("secret.reveal", None, "ok"),
    ]
    masked = audit_actions(admin)[:before]
    assert ("secret.read", "DB_PASSWORD", "ok") in masked  # the masked get was an ordinary read
    assert ("secret.resolve", None, "ok") in masked  # and so was the export to a file
    assert value not in admin.server_output()


# --- issue 15 at the terminal: inheritance shown, JSON errors


def test_resolved_names_and_inherited_reads_against_the_broker(admin: BrokerProcess) -> None:
    values = {"DB_URL": canary(), "SHARED_COMMON": canary(), "SHARED": canary()}
    where = ("-p", "microblog", "-e", "production")
    ok(
        admin.cli(
            "secrets", "set", "-p", "microblog", "-e", "common", "DB_URL", input=values["DB_URL"].encode()
        )
    )
    ok(
        admin.cli(
            "secrets",
            "set",
            "-p",
            "microblog",
            "-e",
            "common",
            "SHARED",
            input=values["SHARED_COMMON"].encode(),
        )
    )
    ok(admin.cli("secrets", "set", *where, "SHARED", input=values["SHARED"].encode()))

    before = len(audit_actions(admin))
    listed = ok(admin.cli("secrets", "list", *where, "--resolved", "--json"))
    listing = audit_actions(admin)[before:]

    assert {(item["name"], item["environment"]) for item in json.loads(listed.stdout)} == {
        ("DB_URL", "common"),
        ("SHARED", "production"),
    }
    # Names only: the broker read no value for it, so it audited none as read.
    assert [a for a, _, _ in listing if a.startswith("secret.")] == ["secret.list", "secret.list"]

    before = len(audit_actions(admin))
    shown = ok(admin.cli("secrets", "get", *where, "DB_URL", "--reveal"))
    reading = [(a, n, o) for a, n, o in audit_actions(admin)[before:] if a.startswith("secret.")]

    assert shown.stdout == values["DB_URL"]
    assert shown.stderr == "DB_URL: version 1 from microblog/common\n"
    assert [(a, n, o) for a, n, o in reading if o == "ok"] == [("secret.reveal", "DB_URL", "ok")]
    masked = json.loads(ok(admin.cli("secrets", "get", *where, "DB_URL", "--json")).stdout)
    assert (masked["environment"], masked["inherited"]) == ("common", True)
    for value in values.values():
        assert value not in listed.stdout + listed.stderr + json.dumps(masked)


def test_errors_under_json_against_the_broker(admin: BrokerProcess) -> None:
    unknown = admin.cli("--json", "secrets", "list", "-p", "microblog", "-e", "nope")
    usage = admin.cli("secrets", "list", "-p", "microblog", "-e", "NOPE", "--json")

    assert unknown.returncode == 1 and unknown.stdout == ""
    error = json.loads(unknown.stderr)
    assert (error["status"], error["field"]) == (404, None) and "nope" in error["error"]
    assert usage.returncode == 2
    assert json.loads(usage.stderr)["field"] == "environment"


def test_a_value_is_never_accepted_on_the_command_line(admin: BrokerProcess) -> None:
    value = canary()
    attempts = [
        ("secrets", "set", "-p", "microblog", "-e", "common", "API_KEY", value),
        ("secrets", "set", "-p", "microblog", "-e", "common", "API_KEY", f"--value={value}"),
        ("secrets", "set", "-p", "microblog", "-e", "common", "API_KEY", "-v", value),
        ("secrets", "generate", "-p", "microblog", "-e", "common", "API_KEY", value),
        ("login", "--url", admin.url, "--client-id", "admin", value),
    ]
    for args in attempts:
        out = admin.cli(*args, input=b"")
        assert out.returncode == 2, (args, out.stderr)
        assert value not in out.stdout + out.stderr
    missing = admin.cli("secrets", "get", "-p", "microblog", "-e", "common", "API_KEY")
    assert missing.returncode == 1


def test_session_files_are_0600_for_every_profile(admin: BrokerProcess, tmp_path: Path) -> None:
    secret_file = admin.data_dir / "bootstrap-admin.secret"
    ok(
        admin.cli(
            "--profile",
            "ci",
            "login",
            "--url",
            admin.url,
            "--client-id",
            "admin",
            "--secret-file",
            str(secret_file),
        )
    )

    directory = Path(admin.env["XDG_CONFIG_HOME"]) / "strongroom"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["config.toml", "credentials.ci.json", "credentials.json"]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    listed = ok(admin.cli("--profile", "ci", "projects", "list"))
    assert "microblog" in listed.stdout


# --- run: exit codes and signals reach the program itself


def test_run_passes_the_exit_code_through(admin: BrokerProcess) -> None:
    out = admin.cli(
        "run", "-p", "microblog", "-e", "staging", "--", sys.executable, "-c", "raise SystemExit(7)"
    )

    assert out.returncode == 7
    assert out.stderr == ""


@pytest.fixture
def running(admin: BrokerProcess) -> Iterator[subprocess.Popen[str]]:
    """`strongroom run` of a program whose SIGTERM handler exits 42, once it says it is ready."""
    program = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [
            str(BIN / "strongroom"),
            "run",
            "-p",
            "microblog",
            "-e",
            "staging",
            "--",
            sys.executable,
            "-c",
            program,
        ],
        env=admin.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_run_becomes_the_program_so_sigterm_reaches_its_own_handler(running: subprocess.Popen[str]) -> None:
    assert running.stdout is not None
    ready, pid = running.stdout.readline().split()

    assert ready == "ready" and int(pid) == running.pid  # exec: no Strongroom parent in between
    assert Path(f"/proc/{running.pid}/exe").resolve() == Path(sys.executable).resolve()
    running.send_signal(signal.SIGTERM)

    assert running.wait(timeout=30) == 42


def test_watch_passes_signals_on_and_ends_with_the_programs_status(admin: BrokerProcess) -> None:
    program = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(43))\n"
        "print('ready', os.environ['LOG_LEVEL'], flush=True)\n"
        "time.sleep(120)\n"
    )
    ok(
        admin.cli(
            "secrets", "set", "-p", "microblog", "-e", "common", "LOG_LEVEL", "--not-sensitive", input=b"info"
        )
    )
    proc = subprocess.Popen(
        [
            str(BIN / "strongroom"),
            "run",
            "-p",
            "microblog",
            "-e",
            "staging",
            "--watch",
            "--interval",
            "2",
            "--",
            sys.executable,
            "-c",
            program,
        ],
        env=admin.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", "info"]
        ok(
            admin.cli(
                "secrets",
                "set",
                "-p",
                "microblog",
                "-e",
                "staging",
                "LOG_LEVEL",
                "--not-sensitive",
                input=b"debug",
            )
        )
        assert proc.stdout.readline().split() == ["ready", "debug"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 43
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


# --- journey 3: a short-lived, scoped, use-limited, CIDR-bound token for CI


def test_a_ci_token_is_printed_once_scoped_use_limited_and_revocable(
    admin: BrokerProcess, tmp_path: Path
) -> None:
    value = canary()
    ok(
        admin.cli(
            "secrets", "set", "-p", "microblog", "-e", "production", "DB_PASSWORD", input=value.encode()
        )
    )
    created = ok(
        admin.cli(
            "tokens",
            "create",
            "--scope",
            "microblog:production:read",
            "--ttl",
            "10m",
            "--uses",
            "2",
            "--cidr",
            "127.0.0.0/8",
        )
    )
    token = created.stdout.strip()
    assert token.startswith("srt_") and token not in created.stderr
    ci = {"STRONGROOM_TOKEN": token, "STRONGROOM_URL": admin.url, "XDG_CONFIG_HOME": str(tmp_path / "ci")}

    probe = tmp_path / "env.json"
    ok(
        admin.cli(
            "run", "-p", "microblog", "-e", "production", "--", sys.executable, "-c", dump_env(probe), env=ci
        )
    )
    seen = json.loads(probe.read_text())
    assert seen["DB_PASSWORD"] == value and "STRONGROOM_TOKEN" not in seen
    refused = admin.cli("secrets", "set", "-p", "microblog", "-e", "production", "X", input=b"y", env=ci)
    assert (
        refused.returncode == 1
        and refused.stderr == "Error: this token does not grant write on microblog/production/X\n"
    )
    spent = admin.cli("secrets", "list", "-p", "microblog", "-e", "production", env=ci)
    assert spent.returncode == 1 and "STRONGROOM_TOKEN" in spent.stderr  # two uses: run and the refused set

    listed = ok(admin.cli("tokens", "list", "--all", "--json"))
    assert token not in listed.stdout
    [mine] = [t for t in json.loads(listed.stdout) if t["num_uses"] == 2]
    assert mine["uses_remaining"] == 0 and mine["bound_cidrs"] == ["127.0.0.0/8"]
    ok(admin.cli("tokens", "revoke", mine["accessor"]))
    after = json.loads(ok(admin.cli("tokens", "list", "--all", "--json")).stdout)
    assert [t["revoked"] for t in after if t["accessor"] == mine["accessor"]] == [True]

    # C45: a token bound to another network is refused from here (as a stolen one would be).
    elsewhere = ok(
        admin.cli("tokens", "create", "--scope", "microblog:production:read", "--cidr", "10.0.0.0/8")
    )
    stolen = {**ci, "STRONGROOM_TOKEN": elsewhere.stdout.strip()}
    out = admin.cli("secrets", "list", "-p", "microblog", "-e", "production", env=stolen)
    assert out.returncode == 1 and "the broker refused the token in STRONGROOM_TOKEN" in out.stderr


# --- I50/I52: a client clock an hour off, against the real broker's expires_in


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_a_client_clock_an_hour_off_logs_in_reads_and_renews_on_time(
    admin: BrokerProcess, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    from cli import session
    from cli.root import strongroom

    offset = [skew]
    monkeypatch.setattr(session, "wall_clock", lambda: time.time() + offset[0])
    monkeypatch.setattr(session, "boot_clock", lambda: None)  # the wall clock alone decides here
    runner = CliRunner()
    env = {**admin.env, "STRONGROOM_URL": None, "STRONGROOM_TOKEN": None, "STRONGROOM_PROFILE": None}
    secret_file = admin.data_dir / "bootstrap-admin.secret"

    def cli(*args: str) -> str:
        result = runner.invoke(strongroom, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    cli(
        "--profile",
        "skewed",
        "login",
        "--url",
        admin.url,
        "--client-id",
        "admin",
        "--secret-file",
        str(secret_file),
    )
    renewals = sum(a == "token.renew-self" for a, _, _ in audit_actions(admin))
    assert "microblog" in cli("--profile", "skewed", "projects", "list")
    assert sum(a == "token.renew-self" for a, _, _ in audit_actions(admin)) == renewals  # fresh: no renewal

    offset[0] += 600  # two thirds of the broker's 900 s have passed, by the (skewed) local clock
    assert "microblog" in cli("--profile", "skewed", "projects", "list")
    assert sum(a == "token.renew-self" for a, _, _ in audit_actions(admin)) == renewals + 1

    offset[0] += 900  # past the renewed lifetime: never sent again
    result = runner.invoke(strongroom, ["--profile", "skewed", "projects", "list"], env=env)
    assert result.exit_code == 1
    assert result.output == "Error: your session expired: run strongroom --profile skewed login\n"
    assert os.environ.get("STRONGROOM_TOKEN") is None
