"""`./scripts/serve` installs only when pyproject.toml or the interpreter changed, and says how to reach the CLI.

The script runs for real (bash, sha256sum) in a scratch checkout; its `.venv/bin/python` is a stand-in that
records `pip install` calls and creates the two commands, because a real install takes tens of seconds
and would rewrite the shared virtualenv's editable install. The real install is what the quick start
and `tests/e2e` use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "serve"

PYTHON_STANDIN = """#!/usr/bin/env bash
# Stand-in interpreter: `-c` prints a version; `-m pip install` is recorded and makes the commands.
here=$(cd "$(dirname "$0")" && pwd)
if [ "$1" = -c ]; then echo "${FAKE_PYTHON_VERSION:-3.11.2 stand-in}"; exit 0; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  echo install >>"$here/../../pip-calls"
  [ -z "${FAKE_PIP_FAILS:-}" ] || { echo "pip: resolution failed" >&2; exit 1; }
  for cmd in strongroom strongroom-server; do
    printf '#!/usr/bin/env bash\\necho "%s $*"\\n' "$cmd" >"$here/$cmd"; chmod +x "$here/$cmd"
  done
  exit 0
fi
exit 2
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "serve")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "strongroom"\ndependencies = ["click"]\n')
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(PYTHON_STANDIN)
    (bin_dir / "python").chmod(0o755)
    return tmp_path


def serve(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checkout / "scripts" / "serve"), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def installs(checkout: Path) -> int:
    calls = checkout / "pip-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_installs_once_then_starts_without_pip(checkout: Path) -> None:
    first = serve(checkout, "--port", "9999")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "strongroom-server serve --port 9999"
    assert installs(checkout) == 1

    again = serve(checkout)
    assert again.returncode == 0, again.stderr
    assert installs(checkout) == 1  # nothing changed: no pip run


def test_a_changed_pyproject_or_interpreter_installs_again(checkout: Path) -> None:
    assert serve(checkout).returncode == 0
    with (checkout / "pyproject.toml").open("a") as f:
        f.write("# a new dependency\n")
    assert serve(checkout).returncode == 0
    assert installs(checkout) == 2
    assert serve(checkout, FAKE_PYTHON_VERSION="3.12.1 stand-in").returncode == 0
    assert installs(checkout) == 3


def test_a_removed_command_installs_again(checkout: Path) -> None:
    assert serve(checkout).returncode == 0
    (checkout / ".venv" / "bin" / "strongroom").unlink()
    assert serve(checkout).returncode == 0
    assert installs(checkout) == 2
    assert (checkout / ".venv" / "bin" / "strongroom").exists()


def test_a_failed_install_is_shown_and_retried_next_time(checkout: Path) -> None:
    failed = serve(checkout, FAKE_PIP_FAILS="1")
    assert failed.returncode == 1
    assert "pip: resolution failed" in failed.stderr
    assert not (checkout / ".venv" / ".strongroom-installed").exists()
    assert serve(checkout).returncode == 0
    assert installs(checkout) == 2


def test_says_how_to_reach_the_cli(checkout: Path) -> None:
    r = serve(checkout)
    assert f'export PATH="{checkout}/.venv/bin:$PATH"' in r.stderr
    assert ".venv/bin/strongroom" in r.stderr
