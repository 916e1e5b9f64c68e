"""What the CLI does to a terminal: colour rules, progress, completion, --json, help, the generated reference."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from cli_test_support import Invoke, canary

import cli
from cli import output
from cli.reference import render
from cli.root import SHORT_HELP, SUBCOMMANDS, strongroom

REPO = Path(cli.__file__).resolve().parent.parent


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


# --- colour


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert output.colour_enabled(FakeTerminal()) is True
    assert output.colour_enabled(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.colour_enabled(FakeTerminal()) is False
    monkeypatch.setenv("NO_COLOR", "")  # the spec: present but empty does not count
    assert output.colour_enabled(FakeTerminal()) is True
    monkeypatch.setenv("TERM", "dumb")
    assert output.colour_enabled(FakeTerminal()) is False


def test_errors_are_red_on_a_terminal_and_plain_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    output.error("the broker is down")
    assert terminal.getvalue() == click.style("Error:", fg="red", bold=True) + " the broker is down\n"

    monkeypatch.setenv("NO_COLOR", "1")
    plain = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", plain)
    output.error("the broker is down")
    assert plain.getvalue() == "Error: the broker is down\n"


def test_error_text_from_the_broker_cannot_carry_escape_sequences(cli: Invoke) -> None:
    result = cli("--url", "http://127.0.0.1:9", "--profile", "default", "projects", "list")

    assert "\x1b" not in result.output


# --- progress


def test_progress_appears_only_after_the_delay_and_is_wiped(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TERM", "xterm")
    drawn = threading.Event()
    original_write = terminal.write

    def write(text: str) -> int:
        if "waiting" in text:
            drawn.set()
        return original_write(text)

    monkeypatch.setattr(terminal, "write", write)

    with output.progress("waiting for the broker", delay=0.01):
        assert drawn.wait(30)
    assert "| waiting for the broker..." in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[2K")

    quick = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", quick)
    with output.progress("waiting for the broker"):
        pass
    assert quick.getvalue() == ""


def test_no_progress_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())

    context = output.progress("x", delay=0)

    assert type(context).__name__ == "nullcontext"


# --- completion


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "_STRONGROOM_COMPLETE=bash_complete"),
        ("zsh", "#compdef strongroom"),
        ("fish", "complete --no-files --command strongroom"),
    ],
)
def test_completion_prints_clicks_script(cli: Invoke, shell: str, marker: str) -> None:
    result = cli("completion", shell)

    assert result.exit_code == 0, result.output
    assert marker in result.stdout


def test_completion_script_completes_commands_and_options(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "_STRONGROOM_COMPLETE": "bash_complete",
        "COMP_WORDS": "strongroom secrets gen",
        "COMP_CWORD": "2",
    }

    done = subprocess.run(
        [sys.executable, "-m", "cli.main"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "plain,generate" in done.stdout.splitlines()


def test_completion_of_an_unknown_shell_is_a_usage_error(cli: Invoke) -> None:
    assert cli("completion", "tcsh").exit_code == 2


# --- --json everywhere that prints a result

WITH_JSON = [
    ("login",),
    ("logout",),
    ("projects", "list"),
    ("projects", "create"),
    ("envs", "list"),
    ("envs", "create"),
    ("secrets", "list"),
    ("secrets", "get"),
    ("secrets", "set"),
    ("secrets", "delete"),
    ("secrets", "history"),
    ("secrets", "rollback"),
    ("secrets", "generate"),
    ("tokens", "create"),
    ("tokens", "list"),
    ("tokens", "revoke"),
    ("identities", "create"),
    ("identities", "list"),
    ("identities", "show"),
    ("identities", "disable"),
    ("identities", "enable"),
    ("identities", "delete"),
    ("identities", "rotate-secret"),
    ("projects", "delete"),
    ("envs", "delete"),
    ("envs", "set-parent"),
    ("secrets", "undelete"),
    ("secrets", "destroy"),
    ("profiles", "list"),
    ("export",),
]


@pytest.mark.parametrize("path", WITH_JSON, ids=" ".join)
def test_every_command_that_prints_a_result_has_json(path: tuple[str, ...]) -> None:
    ctx = click.Context(strongroom)
    command: click.Command | None = strongroom
    for name in path:
        assert isinstance(command, click.Group)
        command = command.get_command(ctx, name)
    assert command is not None
    assert any("--json" in getattr(p, "opts", []) for p in command.params), path


# --- help and the reference


def test_short_help_table_matches_the_commands() -> None:
    ctx = click.Context(strongroom)
    for name, text in SHORT_HELP.items():
        assert name in SUBCOMMANDS
        command = strongroom.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(1000) == text, name


def test_help_does_not_import_the_commands_it_has_short_help_for() -> None:
    script = (
        "import sys\nsys.argv = ['strongroom', '--help']\nfrom cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    modules = set(done.stderr.split())
    for name in SHORT_HELP:
        module = SUBCOMMANDS[name].split(":")[0]
        assert module not in modules, module
    for name in SUBCOMMANDS:
        assert f"  {name} " in done.stdout


def test_run_imports_no_http_client_at_start_up() -> None:
    script = (
        "import sys\nsys.argv = ['strongroom', 'run', '--help']\nfrom cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    modules = set(done.stderr.split())
    assert "cli.client" in modules
    for heavy in ("http.client", "email.parser", "tomllib", "broker"):
        assert heavy not in modules, heavy


def test_the_cli_reference_is_up_to_date() -> None:
    stored = (REPO / "docs" / "cli.md").read_text()

    assert stored == render(), "docs/cli.md is stale: run .venv/bin/python -m cli.reference > docs/cli.md"


def test_stray_arguments_are_never_quoted_back(cli: Invoke) -> None:
    value = canary()

    result = cli("secrets", "get", "-p", "shop", "-e", "production", "NAME", value)

    assert result.exit_code == 2
    assert "got unexpected extra arguments (not shown, in case one is a secret)" in result.stderr
    assert value not in result.output
