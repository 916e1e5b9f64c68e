"""`strongroom run`: one round trip, then exec; tested for real in a subprocess against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, Invoke, canary
from standin_broker import StandinBroker

import cli
from cli.credentials import Credential

REPO = Path(cli.__file__).resolve().parent.parent
CHILD = (
    "import json, os, sys; "
    "print(json.dumps({k: os.environ.get(k) for k in ('DB_PASSWORD', 'LOG_LEVEL', 'EXIT_CODE', 'KEEP_ME')})); "
    "sys.exit(int(os.environ['EXIT_CODE']))"
)


@pytest.fixture
def values(broker: StandinBroker) -> dict[str, str]:
    """`common` holds LOG_LEVEL and a DB_PASSWORD that `production` overrides; production sets EXIT_CODE=7."""
    production_password = canary()
    broker.put("shop", "common", "LOG_LEVEL", "info", sensitive=False)
    broker.put("shop", "common", "DB_PASSWORD", canary())
    broker.put("shop", "production", "DB_PASSWORD", production_password)
    broker.put("shop", "production", "EXIT_CODE", "7", sensitive=False)
    return {"DB_PASSWORD": production_password, "LOG_LEVEL": "info", "EXIT_CODE": "7"}


def run_cli(args: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_execs_the_command_with_the_values_and_passes_its_exit_code_through(
    broker: StandinBroker, values: dict[str, str]
) -> None:
    env = {
        "STRONGROOM_URL": broker.url,
        "STRONGROOM_TOKEN": broker.issue(CLIENT_ID),
        "DB_PASSWORD": "stale-value-from-the-shell",
        "KEEP_ME": "kept",
    }

    done = run_cli(["run", "-p", "shop", "-e", "production", "--", sys.executable, "-c", CHILD], env)

    assert done.returncode == 7, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {**values, "KEEP_ME": "kept"}  # inherited, overridden, and the values win over the shell
    assert done.stderr == ""
    [call] = broker.calls()  # exactly one round trip
    assert (call.method, call.target) == ("GET", "/v1/projects/shop/environments/production/resolved")


def test_run_does_not_hand_the_broker_token_to_the_program(
    broker: StandinBroker, values: dict[str, str]
) -> None:
    token = broker.issue(CLIENT_ID)
    probe = "import os, sys; sys.exit(3 if 'STRONGROOM_TOKEN' in os.environ else 0)"

    done = run_cli(
        ["run", "-p", "shop", "-e", "production", "--", sys.executable, "-c", probe],
        {"STRONGROOM_URL": broker.url, "STRONGROOM_TOKEN": token},
    )

    assert done.returncode == 0, done.stderr


def test_run_with_the_cached_session_makes_one_round_trip_and_no_renewal(
    broker: StandinBroker, values: dict[str, str], logged_in: Credential
) -> None:
    # The session was cached at a frozen clock far from the real one, so any renewal logic would fire.
    done = run_cli(["run", "-p", "shop", "-e", "production", "--", sys.executable, "-c", CHILD], {})

    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout)["DB_PASSWORD"] == values["DB_PASSWORD"]
    [call] = broker.calls()
    assert call.target.endswith("/resolved")
    assert call.authorization == f"Bearer {logged_in.token}"


def test_run_of_a_missing_command_exits_127_in_one_sentence(
    broker: StandinBroker, values: dict[str, str]
) -> None:
    env = {"STRONGROOM_URL": broker.url, "STRONGROOM_TOKEN": broker.issue(CLIENT_ID)}

    done = run_cli(["run", "-p", "shop", "-e", "production", "--", "no-such-command-here", "--flag"], env)

    assert done.returncode == 127
    assert done.stderr == "Error: no-such-command-here: command not found\n"
    assert values["DB_PASSWORD"] not in done.stdout + done.stderr


def test_run_of_a_file_that_is_not_executable_exits_126(
    broker: StandinBroker, values: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    env = {"STRONGROOM_URL": broker.url, "STRONGROOM_TOKEN": broker.issue(CLIENT_ID)}

    done = run_cli(["run", "-p", "shop", "-e", "production", "--", str(script)], env)

    assert done.returncode == 126
    assert done.stderr == f"Error: {script}: permission denied\n"


# --- in-process, with exec replaced by a recorder


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, str]]]:
    """Record os.execvpe calls instead of replacing the test process."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: calls.append((file, args, env)))
    return calls


def test_run_passes_the_command_and_its_options_through_untouched(
    cli: Invoke,
    logged_in: Credential,
    values: dict[str, str],
    execs: list[tuple[str, list[str], dict[str, str]]],
) -> None:
    result = cli(
        "run", "-p", "shop", "-e", "production", "bin/rails", "server", "-p", "3000", "--", "-e", "x"
    )

    assert result.exit_code == 0, result.output
    [(file, args, env)] = execs
    assert file == "bin/rails"
    assert args == ["bin/rails", "server", "-p", "3000", "--", "-e", "x"]
    assert env["DB_PASSWORD"] == values["DB_PASSWORD"]
    assert values["DB_PASSWORD"] not in result.output


def test_run_refuses_a_value_with_a_nul_character_before_exec(
    broker: StandinBroker,
    cli: Invoke,
    logged_in: Credential,
    execs: list[tuple[str, list[str], dict[str, str]]],
) -> None:
    secret = canary()
    broker.put("shop", "production", "BINARY", f"{secret}\x00tail")

    result = cli("run", "-p", "shop", "-e", "production", "--", "true")

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: BINARY: the value has a NUL character, which an environment variable cannot carry\n"
    )
    assert secret not in result.output
    assert execs == []


def test_run_refuses_a_name_that_is_not_a_variable_name(
    broker: StandinBroker,
    cli: Invoke,
    logged_in: Credential,
    execs: list[tuple[str, list[str], dict[str, str]]],
) -> None:
    broker.put("shop", "production", "A=B", "x")

    result = cli("run", "-p", "shop", "-e", "production", "--", "true")

    assert result.exit_code == 1
    assert "'A=B', which is not a valid variable name" in result.stderr
    assert execs == []


def test_run_needs_a_command(cli: Invoke, logged_in: Credential) -> None:
    result = cli("run", "-p", "shop", "-e", "production")

    assert result.exit_code == 2
    assert "Missing argument 'COMMAND...'" in result.stderr


def test_run_in_a_missing_environment_is_one_sentence_and_no_exec(
    cli: Invoke, logged_in: Credential, execs: list[tuple[str, list[str], dict[str, str]]]
) -> None:
    result = cli("run", "-p", "shop", "-e", "staging", "--", "true")

    assert result.exit_code == 1
    assert result.stderr == "Error: projects/shop/environments/staging: not found\n"
    assert execs == []
