"""`strongroom run --only`, `--no-inherit-env` and `--watch`, against the stand-in broker.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e (including signals and exit codes of the exec'd program).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, Invoke, canary
from standin_broker import StandinBroker

import cli
from cli import runner
from cli.commands.run import BASELINE_VARIABLES, child_environment
from cli.credentials import Credential
from cli.errors import CliError

REPO = Path(cli.__file__).resolve().parent.parent
ENV = ("-p", "shop", "-e", "production")
Execs = list[tuple[str, list[str], dict[str, str]]]


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> Execs:
    """Record os.execvpe calls instead of replacing the test process."""
    calls: Execs = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: calls.append((file, args, env)))
    return calls


@pytest.fixture
def values(broker: StandinBroker) -> dict[str, str]:
    out = {"DB_PASSWORD": canary(), "API_KEY": canary(), "LOG_LEVEL": "info"}
    for name, value in out.items():
        broker.put("shop", "production", name, value)
    return out


def test_only_injects_just_the_named_values(
    cli: Invoke, logged_in: Credential, values: dict[str, str], execs: Execs
) -> None:
    result = cli("run", *ENV, "--only", "DB_PASSWORD", "--only", "LOG_LEVEL,DB_PASSWORD", "--", "true")

    assert result.exit_code == 0, result.output
    [(_, _, env)] = execs
    assert env["DB_PASSWORD"] == values["DB_PASSWORD"] and env["LOG_LEVEL"] == "info"
    assert "API_KEY" not in env


def test_only_with_a_name_the_environment_lacks_fails_before_exec(
    cli: Invoke, logged_in: Credential, values: dict[str, str], execs: Execs
) -> None:
    result = cli("run", *ENV, "--only", "DB_PASSWORD,NOPE,GONE", "--", "true")

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: shop/production has no NOPE, GONE: fix --only or check strongroom secrets list "
        "-p shop -e production\n"
    )
    assert execs == []


@pytest.mark.parametrize("bad", ["not-a-name", ",", "A=B"])
def test_only_refuses_what_is_not_a_variable_name(
    broker: StandinBroker, cli: Invoke, logged_in: Credential, bad: str, execs: Execs
) -> None:
    result = cli("run", *ENV, "--only", bad, "--", "true")

    assert result.exit_code == 2
    assert broker.calls() == []


def test_no_inherit_env_passes_only_the_values_and_the_baseline(
    cli: Invoke,
    logged_in: Credential,
    values: dict[str, str],
    execs: Execs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-shell")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TERM", "xterm")

    result = cli("run", *ENV, "--no-inherit-env", "--", "true")

    assert result.exit_code == 0, result.output
    [(_, _, env)] = execs
    assert env["DB_PASSWORD"] == values["DB_PASSWORD"]
    assert env["LC_TIME"] == "C" and env["TERM"] == "xterm" and env["HOME"] == os.environ["HOME"]
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) - set(values) <= set(BASELINE_VARIABLES) | {k for k in env if k.startswith("LC_")}


def test_child_environment_never_passes_the_broker_token() -> None:
    caller = {"STRONGROOM_TOKEN": "srt_x", "PATH": "/bin", "OTHER": "1"}

    assert child_environment(caller, {"A": "1"}, inherit=True) == {"PATH": "/bin", "OTHER": "1", "A": "1"}
    assert child_environment(caller, {"A": "1"}, inherit=False) == {"PATH": "/bin", "A": "1"}
    assert child_environment(caller, {"PATH": "/x"}, inherit=False) == {"PATH": "/x"}  # values win


# --- --watch, for real in a subprocess

CHILD = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(int(os.environ.get('CODE', '0'))))\n"
    "print('started', os.environ['API_KEY'], flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def watcher(broker: StandinBroker, values: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "STRONGROOM_URL": broker.url,
        "STRONGROOM_TOKEN": broker.issue(CLIENT_ID),
        "CODE": "42",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "run",
            *ENV,
            "--watch",
            "--interval",
            "2",
            "--",
            sys.executable,
            "-c",
            CHILD,
        ],
        cwd=REPO,
        env=env,
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


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_watch_restarts_the_program_when_a_value_changes_and_passes_signals_on(
    broker: StandinBroker, values: dict[str, str], watcher: subprocess.Popen[str]
) -> None:
    assert read_line(watcher) == f"started {values['API_KEY']}"
    rotated = canary()
    broker.put("shop", "production", "API_KEY", rotated)

    assert read_line(watcher) == f"started {rotated}"  # readiness by output, bounded by the test timeout
    watcher.send_signal(signal.SIGTERM)

    assert watcher.wait(timeout=30) == 42
    assert watcher.stderr is not None
    stderr = watcher.stderr.read()
    assert stderr == f"strongroom: values changed; restarting {sys.executable}\n"
    assert rotated not in stderr and values["API_KEY"] not in stderr


def test_watch_without_changes_does_not_restart_and_exits_with_the_program(
    broker: StandinBroker, values: dict[str, str], watcher: subprocess.Popen[str]
) -> None:
    assert read_line(watcher) == f"started {values['API_KEY']}"
    deadline = time.monotonic() + 60
    while len(broker.calls("GET")) < 3:  # two polls after the first fetch, nothing changed
        assert watcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    watcher.send_signal(signal.SIGTERM)

    assert watcher.wait(timeout=30) == 42
    assert watcher.stderr is not None and watcher.stderr.read() == ""


def test_supervise_keeps_the_program_running_while_the_broker_fails(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    script = f"import os; open({str(log)!r}, 'a').write(os.environ['V'] + '\\n'); import time; time.sleep(60)"
    failures = [CliError("the broker is down"), CliError("still down")]
    notes: list[str] = []

    def first_started() -> bool:
        return log.exists() and log.read_text().startswith("1\n")

    def fetch() -> dict[str, str]:
        if failures:
            raise failures.pop(0)
        # New values only once the first program has written its line: restarted before that (Python starts
        # slowly on a loaded machine, and the polls come every 0.1 s) it would leave "2" alone in the log.
        deadline = time.monotonic() + 60
        while not first_started() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"V": "2"}

    def stop_when_restarted() -> None:
        # The supervisor's own SIGTERM handler passes the signal on to the second child.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count("\n") >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=stop_when_restarted, daemon=True).start()
    status = runner.supervise(
        [sys.executable, "-c", script],
        lambda current: {**os.environ, **current},
        {"V": "1"},
        fetch,
        interval=0.1,
        note=notes.append,
    )

    assert log.read_text() == "1\n2\n"
    assert status == -signal.SIGTERM  # the child had no handler: SIGTERM, passed on, ended it
    assert notes == [
        "cannot check for new values (the broker is down); the program keeps the ones it has",
        "the broker answers again",
        f"values changed; restarting {sys.executable}",
    ]


def test_exit_like_a_signal_kills_this_process_with_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from cli.runner import exit_like; exit_like(-15)"],
        cwd=REPO,
        check=False,
        timeout=60,
    )

    assert done.returncode == -signal.SIGTERM


def test_watch_interval_is_bounded(cli: Invoke, logged_in: Credential) -> None:
    result = cli("run", *ENV, "--watch", "--interval", "1", "--", "true")

    assert result.exit_code == 2
    assert "1 is not in the range 2<=x<=3600" in result.stderr


def test_run_help_documents_the_environment_it_builds(cli: Invoke) -> None:
    result = cli("run", "--help")

    assert "PATH, HOME, USER, LOGNAME, SHELL, TERM, TZ, TMPDIR, LANG, LANGUAGE and LC_*" in " ".join(
        result.stdout.split()
    )
    assert json.dumps(BASELINE_VARIABLES)  # the constant the help text states
