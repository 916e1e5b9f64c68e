"""Catalogue F/36: no consumer runs a command planted in a value (a sentinel file must not appear).

Ruby dotenv runs `$(...)` in unquoted and double-quoted values (the substitution Kamal relies on);
Debian's Ruby dotenv 2.4 also reads line by line, so multi-line values are fed to it too. The
shells source the export file. Each oracle is first shown to create the sentinel from a naive line,
so that its absence afterwards means something.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from broker.renderers.base import Entry, RenderError
from broker.renderers.registry import get_renderer
from tests.support import render_oracles as oracles
from tests.support.render_oracles import LineServer
from tests.unit.renderers.values import OPTIONS


def planted(sentinel: Path) -> list[str]:
    cmd = f"touch {sentinel}"
    return [
        f"$({cmd})",
        f"`{cmd}`",
        f"x $({cmd}) y",
        f"it's $({cmd})",
        f"it's `{cmd}`",
        f'"$({cmd})"',
        f"'$({cmd})'",
        f"\\$({cmd})",
        f"${{X:-$({cmd})}}",
        f"line one\n$({cmd})",
        f"line one\nKEY2=$({cmd})",
        f'line one\nKEY2="$({cmd})"',
        f"a'\n$({cmd})\n'b",
        f"$(\n{cmd}\n)",
        f"'; {cmd}; '",
        f'"; {cmd}; "',
    ]


def rendered(target: str, values: list[str]) -> list[bytes]:
    out = []
    for i, value in enumerate(values):
        try:
            (file,) = get_renderer(target).render([Entry(f"KEY{i}", value, sensitive=True)], options=OPTIONS)
        except RenderError:
            continue
        out.append(file.content)
    return out


def test_ruby_dotenv_runs_no_planted_command(ruby_dotenv: LineServer, sentinel: Path) -> None:
    ruby_dotenv.parse(f"NAIVE=$(touch {sentinel})\n".encode())
    assert sentinel.exists(), "the oracle must run an unquoted $(...), else this test proves nothing"
    sentinel.unlink()
    files = rendered("dotenv", planted(sentinel))
    assert len(files) >= 6
    for content in files:
        with contextlib.suppress(oracles.ParseError):
            ruby_dotenv.parse(content)
        assert not sentinel.exists(), content


@pytest.mark.parametrize("target", ["dotenv-export", "dotenv"])
def test_shells_run_no_planted_command(
    target: str, shells: tuple[str, ...], sentinel: Path, tmp_path: Path
) -> None:
    naive = tmp_path / "naive.sh"
    naive.write_text(f'X="$(touch {sentinel})"\n')
    oracles.source_in_shell(shells[0], naive, cwd=tmp_path)
    assert sentinel.exists(), "the oracle must run a double-quoted $(...), else this test proves nothing"
    sentinel.unlink()
    files = rendered(target, planted(sentinel))
    assert len(files) >= 6
    for content in files:
        path = tmp_path / "rendered.sh"
        path.write_bytes(content)
        for shell in shells:
            # people source .env files in shells too: the dotenv target reads the same there
            oracles.source_in_shell(shell, path, cwd=tmp_path)
            assert not sentinel.exists(), (shell, content)
