"""The `strongroom` root: version, help, exit statuses, and what start-up imports."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from cli_test_support import Invoke

import cli
from cli import main as main_module
from cli.root import SUBCOMMANDS

REPO = Path(cli.__file__).resolve().parent.parent


def imported_modules(*args: str) -> set[str]:
    """The modules loaded by `strongroom ARGS...` in a fresh interpreter (the console script's path)."""
    # sys.modules rather than -X importtime: importlib.import_module, used for lazy commands, is not logged there.
    script = (
        "import sys\n"
        f"sys.argv = ['strongroom', *{list(args)!r}]\n"
        "from cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stderr.split())


def test_version_is_the_installed_distributions(cli: Invoke) -> None:
    result = cli("--version")

    assert result.exit_code == 0
    assert result.stdout == f"strongroom {importlib.metadata.version('strongroom')}\n"


def test_the_fast_version_path_prints_what_click_prints(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["strongroom", "--version"])

    main_module.main()

    assert capsys.readouterr().out == cli("--version").stdout


def test_version_imports_neither_click_nor_the_http_stack() -> None:
    modules = imported_modules("--version")

    assert "cli.main" in modules
    for heavy in ("click", "http.client", "ssl", "json", "dataclasses", "cli.client", "cli.root"):
        assert heavy not in modules


def test_run_loads_neither_the_other_commands_nor_heavy_libraries() -> None:
    modules = imported_modules("run", "--help")

    assert "cli.commands.run" in modules
    for other in ("cli.commands.secrets", "cli.commands.projects", "cli.commands.envs", "cli.commands.auth"):
        assert other not in modules
    for heavy in ("httpx", "requests", "rich", "pydantic", "cryptography", "broker"):
        assert heavy not in modules


def test_help_lists_every_command(cli: Invoke) -> None:
    result = cli("--help")

    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.stdout


def test_every_lazy_command_loads(cli: Invoke) -> None:
    for name in SUBCOMMANDS:
        result = cli(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        assert result.stdout.startswith(f"Usage: strongroom {name}")


def test_an_unknown_command_is_a_usage_error(cli: Invoke) -> None:
    result = cli("frobnicate")

    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


def test_there_is_no_token_option(cli: Invoke) -> None:
    result = cli("--token", "srt_abc", "projects", "list")

    assert result.exit_code == 2
    assert "No such option '--token'" in result.stderr


def test_the_console_script_reports_errors_as_one_sentence_with_status_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "projects", "list"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr == "Error: not logged in: run strongroom login --url URL --client-id ID\n"
    assert done.stdout == ""
