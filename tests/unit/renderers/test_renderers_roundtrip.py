"""Catalogue F/39: for every target, arbitrary text parses back to exactly the input through the real
consumer (or our emulation of it, kept in agreement with the real program), or the renderer raises
RenderError; never a different value.

Oracles per target (see tests/support/render_oracles.py): dotenv -> python-dotenv with interpolation
on and off, Node dotenv, Ruby dotenv (single-line values: Debian ships 2.4, which reads line by
line); dotenv-export -> bash and dash sourcing it with `set -a`; env-file -> the docker CLI
emulation (as is and with the quote trimming proposed in docker/cli#3630) and the podman emulation
(the real engines are in tests/integration/renderers); compose -> the Docker Compose v2.40.3
emulation; systemd -> the EnvironmentFile= emulation of systemd.exec(5); json -> json.loads;
yaml -> yaml.safe_load; k8s -> yaml.safe_load_all + base64.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

import broker.renderers
from broker.renderers.base import Entry, RenderedFile, RenderError
from broker.renderers.dotenv import SHELL_SPECIAL_NAMES
from broker.renderers.registry import get_renderer
from tests.support import render_oracles as oracles
from tests.support.render_oracles import LineServer
from tests.unit.renderers.values import OPTIONS, SENTINEL, entry_lists

SETTINGS = settings(
    max_examples=int(os.environ.get("STRONGROOM_RENDER_EXAMPLES", "60")),  # raise it for a long hunt
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


# Hypothesis also draws string constants from the code under test ("dotenv", "${...}"): such a value may stand in
# a refusal's fixed wording, so the no-echo check skips values that occur verbatim in the renderers' source.
_RENDERER_SOURCE = "".join(p.read_text() for p in Path(broker.renderers.__file__).parent.glob("*.py"))


def render(target: str, entries: Sequence[Entry]) -> RenderedFile | None:
    """The single rendered file, or None after checking that the refusal is a clean RenderError."""
    try:
        files = get_renderer(target).render(entries, options=OPTIONS)
    except RenderError as exc:
        assert exc.target == target
        assert any(exc.key in (e.name, ascii(e.name)) for e in entries) or exc.key.startswith("options/")
        for e in entries:  # the message never carries a value
            if len(e.value) >= 6 and e.value.strip() and e.value not in _RENDERER_SOURCE:
                assert e.value not in exc.message
        return None
    assert len(files) == 1
    assert files[0].holds_values and files[0].mode == 0o600
    return files[0]


def expected(entries: Sequence[Entry]) -> dict[str, str]:
    return {e.name: e.value for e in entries}


def write(tmp: Path, file: RenderedFile) -> Path:
    path = tmp / file.path
    path.write_bytes(file.content)
    return path


def only_ours(parsed: dict[str, str | None], entries: Sequence[Entry]) -> dict[str, str | None]:
    return {k: v for k, v in parsed.items() if k in {e.name for e in entries}} | {
        k: v for k, v in parsed.items() if k not in {e.name for e in entries} and k not in _AMBIENT
    }


# Variables the shells themselves put in the environment they export.
_AMBIENT = frozenset({"PATH", "PWD", "SHLVL", "_", "OLDPWD"})


@SETTINGS
@given(entries=entry_lists)
def test_dotenv_python_dotenv_interpolation_on_and_off(entries: list[Entry], tmp_path: Path) -> None:
    file = render("dotenv", entries)
    if file is None:
        return
    path = write(tmp_path, file)
    assert oracles.python_dotenv(path, interpolate=False) == expected(entries)
    assert oracles.python_dotenv(path, interpolate=True) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_dotenv_node(entries: list[Entry], node_dotenv: LineServer) -> None:
    file = render("dotenv", entries)
    if file is None:
        return
    assert node_dotenv.parse(file.content) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_dotenv_ruby(entries: list[Entry], ruby_dotenv: LineServer) -> None:
    single_line = [e for e in entries if "\n" not in e.value]  # Debian's Ruby dotenv 2.4 reads line by line
    file = render("dotenv", single_line)
    if file is None:
        return
    assert ruby_dotenv.parse(file.content) == expected(single_line)
    assert not SENTINEL.exists()


@SETTINGS
@given(entries=entry_lists)
def test_dotenv_reads_the_same_when_sourced_by_a_shell(
    entries: list[Entry], tmp_path: Path, shells: tuple[str, ...]
) -> None:
    file = render("dotenv", entries)
    if file is None:
        return
    path = write(tmp_path, file)
    want = {k: v for k, v in expected(entries).items() if k not in SHELL_SPECIAL_NAMES}
    for shell in shells:
        got = oracles.source_in_shell(shell, path, cwd=tmp_path)
        assert {
            k: v for k, v in only_ours(dict(got), entries).items() if k not in SHELL_SPECIAL_NAMES
        } == want, shell
    assert not SENTINEL.exists()


@SETTINGS
@given(entries=entry_lists)
def test_dotenv_export_sourced_by_bash_and_dash(
    entries: list[Entry], tmp_path: Path, shells: tuple[str, ...]
) -> None:
    file = render("dotenv-export", entries)
    if file is None:
        return
    path = write(tmp_path, file)
    for shell in shells:
        got = oracles.source_in_shell(shell, path, cwd=tmp_path)
        assert only_ours(dict(got), entries) == expected(entries), shell
    assert not SENTINEL.exists()


@SETTINGS
@given(entries=entry_lists)
def test_env_file_docker_and_podman_emulations(entries: list[Entry]) -> None:
    file = render("env-file", entries)
    if file is None:
        return
    want = expected(entries)

    def no_lookup(key: str) -> str:
        raise AssertionError(f"a line without '=' would read {key!r} from the host environment")

    for trim in (False, True):
        pairs = oracles.docker_env_file(file.content, lookup=no_lookup, trim_quotes=trim)
        assert len(pairs) == len(want) and dict(pairs) == want
    assert oracles.podman_env_file(file.content, lookup=no_lookup) == want


@SETTINGS
@given(entries=entry_lists)
def test_compose_emulation(entries: list[Entry]) -> None:
    file = render("compose", entries)
    if file is None:
        return
    assert oracles.compose_env_file(file.content) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_systemd_emulation(entries: list[Entry]) -> None:
    file = render("systemd", entries)
    if file is None:
        return
    assert oracles.systemd_env_file(file.content) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_json(entries: list[Entry]) -> None:
    file = render("json", entries)
    if file is None:
        return
    assert json.loads(file.content.decode("utf-8")) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_yaml(entries: list[Entry]) -> None:
    file = render("yaml", entries)
    if file is None:
        return
    assert yaml.safe_load(file.content.decode("utf-8")) == expected(entries)


@SETTINGS
@given(entries=entry_lists)
def test_k8s(entries: list[Entry]) -> None:
    file = render("k8s", entries)
    if file is None:
        return
    config_map, secret = yaml.safe_load_all(file.content.decode("utf-8"))
    assert config_map["kind"] == "ConfigMap" and secret["kind"] == "Secret" and secret["type"] == "Opaque"
    got = dict(config_map["data"])
    for key, encoded in secret["data"].items():
        assert key not in got
        got[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
    assert got == expected(entries)
    assert set(secret["data"]) == {e.name for e in entries if e.sensitive}


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_shell_oracle_runs_planted_commands_when_unquoted(shell: str, tmp_path: Path, sentinel: Path) -> None:
    """The sentinel oracle itself works: an unquoted $(...) does create the file (so its absence means something)."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / "unsafe.sh"
    path.write_text(f"X=$(touch {sentinel})\n")
    oracles.source_in_shell(shell, path, cwd=tmp_path)
    assert sentinel.exists()
