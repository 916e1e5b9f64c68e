"""Each target's documented encoding and refusals, case by case (the property tests cover the rest)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from broker.renderers.base import Entry, RenderError, RenderOptions
from broker.renderers.dotenv import SHELL_SPECIAL_NAMES
from broker.renderers.registry import get_renderer
from tests.support import render_oracles as oracles
from tests.support.render_oracles import LineServer
from tests.unit.renderers.values import OPTIONS

PEM = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+XQ==\n-----END PRIVATE KEY-----\n"


def one(
    target: str, value: str, *, name: str = "KEY", sensitive: bool = True, options: RenderOptions = OPTIONS
) -> str:
    (file,) = get_renderer(target).render([Entry(name, value, sensitive=sensitive)], options=options)
    return file.content.decode("utf-8")


def refused(target: str, value: str, *, name: str = "KEY", sensitive: bool = True) -> RenderError:
    with pytest.raises(RenderError) as caught:
        get_renderer(target).render([Entry(name, value, sensitive=sensitive)], options=OPTIONS)
    return caught.value


def body(text: str) -> list[str]:
    """The lines after the header comment."""
    return [line for line in text.splitlines() if not line.startswith("#")]


# ---------------------------------------------------------------- dotenv
@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("p@ss$word#1", "KEY='p@ss$word#1'"),
        ("$(id) `id` $HOME", "KEY='$(id) `id` $HOME'"),
        ("back\\slash", "KEY='back\\slash'"),
        ("it's", 'KEY="it\'s"'),
        ("  spaced  ", "KEY='  spaced  '"),
        ('say "hi"', "KEY='say \"hi\"'"),
    ],
)
def test_dotenv_quoting(value: str, line: str) -> None:
    assert body(one("dotenv", value)) == [line]


def test_dotenv_carries_a_pem_key_in_single_quotes(tmp_path: Path, node_dotenv: LineServer) -> None:
    text = one("dotenv", PEM, name="SSL_KEY")
    assert text.endswith(f"SSL_KEY='{PEM}'\n")
    path = tmp_path / "x.env"
    path.write_text(text)
    assert oracles.python_dotenv(path, interpolate=True)["SSL_KEY"] == PEM
    assert node_dotenv.parse(text.encode())["SSL_KEY"] == PEM


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("${HOME}", "python-dotenv expands"),
        ("pre${X:-y}post", "python-dotenv expands"),
        ("cr\rhere", "carriage return"),
        ("nul\x00", "NUL"),
        ("it's $5", "mixes a single quote"),
        ("it's \\", "mixes a single quote"),
        ('it\'s "x"', "mixes a single quote"),
        ("a\\\\b", "two backslashes in a row"),  # python-dotenv reads \\ as one backslash in single quotes
        ("ends\\", "ends with one"),
        ("it's `id`", "mixes a single quote"),
        ("line\n$(touch /tmp/x)", "would run as a command"),
    ],
)
def test_dotenv_refusals(value: str, reason: str) -> None:
    exc = refused("dotenv", value)
    assert reason in exc.reason and exc.target == "dotenv" and "file mount" in exc.alternative


# ---------------------------------------------------------------- dotenv-export
def test_dotenv_export_single_quotes_everything() -> None:
    assert body(one("dotenv-export", "it's $(id)\n`x`")) == ["export KEY='it'\\''s $(id)", "`x`'"]


@pytest.mark.parametrize("name", sorted(SHELL_SPECIAL_NAMES))
def test_dotenv_export_refuses_special_shell_names(name: str) -> None:
    assert "bash treats this name specially" in refused("dotenv-export", "v", name=name).reason


def test_dotenv_export_special_names_really_are_lost_in_bash(tmp_path: Path, shells: tuple[str, ...]) -> None:
    """The refusal list is not superstition: bash (or dash, for OPTIND) loses or rejects each of these."""
    kept = []
    for name in sorted(SHELL_SPECIAL_NAMES):
        path = tmp_path / f"{name}.sh"
        path.write_text(f"export {name}='strongroom-probe'\n")
        seen = set()
        for shell in shells:
            try:
                seen.add(oracles.source_in_shell(shell, path, cwd=tmp_path).get(name))
            except oracles.ParseError:
                seen.add(None)
        if seen == {"strongroom-probe"}:
            kept.append(name)
    assert kept == []


# ---------------------------------------------------------------- env-file
def test_env_file_writes_values_verbatim() -> None:
    value = "  p@ss$word#1 ${HOME} `id` 'in' \"side\" \\n  "
    assert body(one("env-file", value)) == [f"KEY={value}"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x\nAWS_SECRET_ACCESS_KEY", "newline"),
        ("crlf\r\n", "newline"),
        ("cr\r", "carriage return"),
        ("nul\x00", "NUL"),
        ("'quoted'", "starts with a quote"),
        ('"x', "starts with a quote"),
        (PEM, "newline"),
        ("x" * 70_000, "line limit"),
    ],
)
def test_env_file_refusals(value: str, reason: str) -> None:
    exc = refused("env-file", value)
    assert reason in exc.reason and "file mount" in exc.alternative


def test_env_file_never_writes_a_line_without_equals() -> None:
    exc = refused("env-file", "x\nAWS_SECRET_ACCESS_KEY", name="DB_PASSWORD")
    assert exc.message == (
        "DB_PASSWORD: value has a newline; the env-file target cannot carry it "
        "(use the compose, dotenv or k8s target, or a file mount)"
    )


# ---------------------------------------------------------------- compose
@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("p@ss$word#1", 'KEY="p@ss$$word#1"'),
        ("${HOME} $$", 'KEY="$${HOME} $$$$"'),
        ('q"uote \\back', 'KEY="q\\"uote \\\\back"'),
        ("two\nlines\r", 'KEY="two\\nlines\\r"'),
    ],
)
def test_compose_doubles_dollars_and_escapes(value: str, line: str) -> None:
    text = one("compose", value)
    assert body(text) == [line]
    assert oracles.compose_env_file(text.encode())["KEY"] == value


def test_compose_refusals() -> None:
    assert "NUL" in refused("compose", "a\x00").reason
    assert "ends with a backslash" in refused("compose", "trailing\\").reason


# ---------------------------------------------------------------- systemd
def test_systemd_quotes_and_keeps_newlines() -> None:
    text = one("systemd", 'a "b" \\c $HOME `x`\n' + PEM)
    assert body(text)[0] == 'KEY="a \\"b\\" \\\\c $HOME `x`'
    assert oracles.systemd_env_file(text.encode())["KEY"] == 'a "b" \\c $HOME `x`\n' + PEM


@pytest.mark.parametrize(
    ("value", "reason"),
    [("a\rb", "carriage return"), ("\x1b[31m", "U+001B"), ("\x7f", "U+007F"), ("\x00", "NUL")],
)
def test_systemd_refusals(value: str, reason: str) -> None:
    exc = refused("systemd", value)
    assert reason in exc.reason and "LoadCredential" in exc.alternative


# ---------------------------------------------------------------- json / yaml
@pytest.mark.parametrize("target", ["json", "yaml"])
def test_json_and_yaml_carry_everything_valid(target: str) -> None:
    values = {
        "A": "\x00 NUL and controls \x1b",
        "B": PEM,
        "C": "yes",
        "D": "0o17",
        "E": "<%= `id` %>",
        "F": "!ruby/object:Gem::Installer",
        "G": "&a *a",
        "H": "- item",
        "I": "key: value",
        "J": "",
        "K": "  \u2028 \x85 \ufeff",
    }
    (file,) = get_renderer(target).render(
        [Entry(k, v, sensitive=True) for k, v in values.items()], options=OPTIONS
    )
    parsed = json.loads(file.content) if target == "json" else yaml.safe_load(file.content)
    assert parsed == values


def test_yaml_quotes_every_value() -> None:
    text = one("yaml", "yes", name="ON")
    assert body(text) == ['"ON": "yes"']
    assert body(one("yaml", "multi\nline\n")) == ["KEY: |", "  multi", "  line"]


# ---------------------------------------------------------------- k8s
def test_k8s_splits_config_and_secret() -> None:
    entries = [
        Entry("RAILS_ENV", "production", sensitive=False),
        Entry("SSL_KEY", PEM, sensitive=True),
        Entry("NUL_SECRET", "a\x00b", sensitive=True),
    ]
    options = RenderOptions(environment="production", service="My_App", namespace="web")
    (file,) = get_renderer("k8s").render(entries, options=options)
    config_map, secret = yaml.safe_load_all(file.content)
    assert config_map["metadata"]["name"] == "my-app-production-config"
    assert secret["metadata"]["name"] == "my-app-production-secrets"
    assert config_map["metadata"]["namespace"] == secret["metadata"]["namespace"] == "web"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/name": "My_App",
        "app.kubernetes.io/instance": "my-app-production",
        "app.kubernetes.io/managed-by": "strongroom",
        "strongroom/environment": "production",
    }
    assert config_map["data"] == {"RAILS_ENV": "production"}
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "SSL_KEY": PEM,
        "NUL_SECRET": "a\x00b",
    }


@pytest.mark.parametrize(
    ("options", "key"),
    [
        (RenderOptions("production", "app.", namespace=None), "options/service"),
        (RenderOptions("production", "myapp", namespace="Web"), "options/namespace"),
        (RenderOptions("production", "myapp", namespace="a.b"), "options/namespace"),
    ],
)
def test_k8s_refuses_invalid_object_names(options: RenderOptions, key: str) -> None:
    with pytest.raises(RenderError) as caught:
        get_renderer("k8s").render([Entry("A", "b", sensitive=True)], options=options)
    assert caught.value.key == key


def test_k8s_refusals() -> None:
    assert "NUL" in refused("k8s", "a\x00b", sensitive=False).reason
    assert "ConfigMap/Secret key" in refused("k8s", "v", name="..hidden").reason
    big = [Entry(f"K{i}", "x" * 300_000, sensitive=True) for i in range(4)]
    with pytest.raises(RenderError, match="K3: the Secret data passes"):
        get_renderer("k8s").render(big, options=OPTIONS)
