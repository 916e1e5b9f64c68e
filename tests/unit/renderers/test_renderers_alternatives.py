"""A refusal's alternative is true: every target it names carries that very value, read back by its consumer.

For each target and value, a refusal names the other targets it suggests (`RenderError.suggested`, also
spelled out in the message); each of them must then render the same entry and its oracle (the same ones as
test_renderers_roundtrip.py: python-dotenv and Node dotenv, bash and dash, the docker, podman, Compose
and systemd emulations of tests/support/render_oracles.py, json, PyYAML) must read back exactly
the stored value. The message must name no target that is not suggested.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from broker.renderers.base import Entry, RenderedFile, RenderError
from broker.renderers.registry import TARGETS, get_renderer
from tests.support import render_oracles as oracles
from tests.support.render_oracles import LineServer
from tests.unit.renderers.test_renderers_roundtrip import SETTINGS
from tests.unit.renderers.values import OPTIONS, TRICKY_VALUES, names, values

# Kamal's refusals are checked with Kamal's own tests; every other target here.
CHECKED = tuple(t for t in TARGETS if t != "kamal")
_NAMED = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(map(re.escape, TARGETS), key=len, reverse=True)) + r")(?![\w-])"
)


def read_back(
    target: str, file: RenderedFile, name: str, tmp_path: Path, node: LineServer, shells: tuple[str, ...]
) -> list[dict[str, str | None]]:
    """What each consumer of `target` reads from the file (one mapping per consumer)."""
    text = file.content.decode("utf-8")
    path = tmp_path / file.path
    path.write_bytes(file.content)
    if target == "dotenv":
        return [
            oracles.python_dotenv(path, interpolate=False),
            oracles.python_dotenv(path, interpolate=True),
            dict(node.parse(file.content)),
        ]
    if target == "dotenv-export":
        ambient = {"PATH", "PWD", "SHLVL", "_", "OLDPWD"}
        found: list[dict[str, str | None]] = []
        for shell in shells:
            env = oracles.source_in_shell(shell, path, cwd=tmp_path)
            found.append({k: v for k, v in env.items() if k not in ambient or k == name})
        return found
    if target == "env-file":
        return [
            dict(oracles.docker_env_file(file.content)),
            dict(oracles.docker_env_file(file.content, trim_quotes=True)),
            dict(oracles.podman_env_file(file.content)),
        ]
    if target == "compose":
        return [dict(oracles.compose_env_file(file.content))]
    if target == "systemd":
        return [dict(oracles.systemd_env_file(file.content))]
    if target == "json":
        return [json.loads(text)]
    if target == "yaml":
        return [yaml.safe_load(text)]
    if target == "k8s":
        config_map, secret = yaml.safe_load_all(text)
        data = dict(config_map["data"])
        data |= {k: base64.b64decode(v).decode("utf-8") for k, v in secret["data"].items()}
        return [data]
    raise AssertionError(f"no oracle for {target}")


def check_refusal(
    target: str, entry: Entry, tmp_path: Path, node: LineServer, shells: tuple[str, ...]
) -> RenderError | None:
    """Render one entry; on a refusal, check that every suggested target carries the value exactly."""
    try:
        get_renderer(target).render([entry], options=OPTIONS)
    except RenderError as exc:
        phrase = re.search(r"\bthe (.*?) target\b", exc.alternative)  # "systemd LoadCredential=" names none
        named = set(_NAMED.findall(phrase.group(1))) if phrase else set()
        assert named == set(exc.suggested), (exc.alternative, exc.suggested)
        assert target not in exc.suggested
        if exc.suggested:
            assert exc.alternative.startswith("use the ") and exc.alternative.endswith(", or a file mount")
        for other in exc.suggested:
            (file,) = get_renderer(other).render([entry], options=OPTIONS)
            for parsed in read_back(other, file, entry.name, tmp_path, node, shells):
                assert parsed == {entry.name: entry.value}, (target, other)
        return exc
    return None


@pytest.mark.parametrize("target", CHECKED)
@pytest.mark.parametrize("sensitive", [True, False])
@pytest.mark.parametrize("value", (*TRICKY_VALUES, "cr\r", "\\\\", "ends\\", "x" * 70_000, "'quoted'"))
def test_every_suggested_target_carries_the_refused_value(
    target: str,
    sensitive: bool,
    value: str,
    tmp_path: Path,
    node_dotenv: LineServer,
    shells: tuple[str, ...],
) -> None:
    check_refusal(target, Entry("KEY", value, sensitive), tmp_path, node_dotenv, shells)


@SETTINGS
@given(target=st.sampled_from(CHECKED), name=names, value=values, sensitive=st.booleans())
def test_suggestions_hold_for_arbitrary_values(
    target: str,
    name: str,
    value: str,
    sensitive: bool,
    tmp_path: Path,
    node_dotenv: LineServer,
    shells: tuple[str, ...],
) -> None:
    check_refusal(target, Entry(name, value, sensitive), tmp_path, node_dotenv, shells)


@pytest.mark.parametrize("name", ["RANDOM", "UID", "_", "PATH", "PWD"])
def test_suggestions_hold_for_names_the_shells_treat_specially(
    name: str, tmp_path: Path, node_dotenv: LineServer, shells: tuple[str, ...]
) -> None:
    """dotenv-export refuses these names, so a dotenv refusal must not suggest it for them."""
    exc = check_refusal("dotenv", Entry(name, "a\rb", True), tmp_path, node_dotenv, shells)
    assert exc is not None and ("dotenv-export" in exc.suggested) == (name in ("PATH", "PWD"))


@pytest.mark.parametrize("value", ["cr\r", "crlf\r\n"])
def test_a_carriage_return_on_dotenv_no_longer_suggests_env_file(
    value: str, tmp_path: Path, node_dotenv: LineServer, shells: tuple[str, ...]
) -> None:
    exc = check_refusal("dotenv", Entry("KEY", value, True), tmp_path, node_dotenv, shells)
    assert exc is not None and "carriage return" in exc.reason
    assert "env-file" not in exc.alternative and "env-file" not in exc.suggested
    assert exc.suggested == ("dotenv-export", "compose", "json")


@pytest.mark.parametrize("value", ["\\\\", "a\\\\b", "ends\\"])
def test_a_backslash_value_on_dotenv_is_refused_for_its_backslashes(
    value: str, tmp_path: Path, node_dotenv: LineServer, shells: tuple[str, ...]
) -> None:
    exc = check_refusal("dotenv", Entry("KEY", value, True), tmp_path, node_dotenv, shells)
    assert exc is not None
    assert "backslash" in exc.reason and "single quote with" not in exc.reason
    assert "dotenv-export" in exc.suggested and "env-file" in exc.suggested


def test_a_single_quote_with_a_dollar_still_names_the_mix() -> None:
    with pytest.raises(RenderError) as caught:
        get_renderer("dotenv").render([Entry("KEY", "it's $5", True)], options=OPTIONS)
    assert "mixes a single quote" in caught.value.reason


@pytest.mark.parametrize(("target", "value"), [("compose", "nul\x00"), ("env-file", "nul\x00")])
def test_a_clear_nul_value_gets_no_target_that_would_refuse_it(target: str, value: str) -> None:
    """A clear NUL value: the k8s ConfigMap refuses it too, so only a file mount is left to suggest."""
    with pytest.raises(RenderError) as caught:
        get_renderer(target).render([Entry("KEY", value, False)], options=OPTIONS)
    assert caught.value.suggested == ()
    assert caught.value.alternative == "use a file mount"


def test_a_name_refusal_suggests_no_target() -> None:
    """A name no env-style target takes is refused with "rename", not with a target that would also refuse."""
    with pytest.raises(RenderError) as caught:
        get_renderer("env-file").render([Entry("BAD-NAME", "v", True)], options=OPTIONS)
    assert caught.value.suggested == () and caught.value.alternative == "rename the variable"


def test_k8s_clear_nul_advice_holds_once_the_variable_is_sensitive() -> None:
    """The ConfigMap refusal says "mark it sensitive": the same value, sensitive, goes to the Secret exactly."""
    with pytest.raises(RenderError) as caught:
        get_renderer("k8s").render([Entry("KEY", "a\x00b", False)], options=OPTIONS)
    assert caught.value.alternative.startswith("mark it sensitive")
    (file,) = get_renderer("k8s").render([Entry("KEY", "a\x00b", True)], options=OPTIONS)
    _config_map, secret = yaml.safe_load_all(file.content.decode())
    assert base64.b64decode(secret["data"]["KEY"]) == b"a\x00b"
