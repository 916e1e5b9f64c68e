"""Catalogue F/35 against the real consumers: `docker run --env-file` on a dockerd the test starts,
and podman's own env-file parser (`podman create --env-file` + `podman inspect`). The same programs
keep the emulations of tests/support/render_oracles.py honest: every hand-written case of
tests/unit/renderers/emulation_cases.py and hypothesis-generated files must read the same in both.

Every docker CLI on the machine is tried (the env file is parsed client side, by the CLI: here 28.2
and Debian's 20.10). One container run per CLI carries the whole batch of
tricky values; the container prints its environment with `busybox env -0`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.renderers.base import Entry, RenderError, RenderOptions
from broker.renderers.envfile import LINE_MAX_BYTES, EnvFileRenderer
from tests.conftest import need
from tests.support import docker, podman, render_oracles
from tests.unit.renderers.emulation_cases import HOST, INVALID_UTF8, LINE_CASES
from tests.unit.renderers.emulation_cases import REFUSED as NOT_READ

OPTIONS = RenderOptions(environment="production", service="myapp")

CARRIED = {
    "PLAIN": "hello",
    "EMPTY": "",
    "SPACES": "  leading and trailing  ",
    "TAB_END": "tab\t",
    "DOLLARS": "$HOME ${HOME} $(id) `id` $$ $",
    "HASHES": "#not-a-comment # nor this",
    "QUOTES_INSIDE": 'it\'s "quoted" inside',
    "QUOTE_END": "ends with a quote'",
    "BACKSLASHES": "C:\\path\\n\\\\",
    "EQUALS": "a=b==c",
    "DATABASE_URL": "postgres://app:p@ss$w0rd#1@db.internal:5432/app_production",
    "UNICODE": "é 😀 \u202eevil\u202c \u2028 \u00a0 \x85 \ufeff",
    "CONTROLS": "\x01\x0b\x0c\x1b[31m\x7f",
}

REFUSED = {
    "NEWLINE": ("x\nAWS_SECRET_ACCESS_KEY", "newline"),
    "CRLF": ("value\r\n", "newline"),
    "CR": ("value\r", "carriage return"),
    "NUL": ("nul\x00byte", "NUL"),
    "SINGLE_QUOTED": ("'quoted'", "starts with a quote"),
    "DOUBLE_QUOTED": ('"quoted"', "starts with a quote"),
    "PEM": ("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "newline"),
    "SURROGATE": ("\ud800", "lone surrogate"),
}


def container_env(
    engine: docker.Engine, env_file: Path, cli: str, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a busybox container sees with `--env-file env_file`."""
    args = ["--env-file", str(env_file), engine.busybox_image(), "/bin/busybox", "env", "-0"]
    if extra_env:
        proc = engine.docker("run", "--rm", "--network", "host", *args, cli=cli, env_extra=extra_env)
        out = proc.stdout
    else:
        out = engine.run(args, cli=cli)
    env: dict[str, str] = {}
    for item in out.split(b"\x00"):
        if item:
            key, _, value = item.partition(b"=")
            env[key.decode()] = value.decode("utf-8")
    return env


@pytest.mark.parametrize("cli", docker.docker_clis() or ["docker"])
def test_env_file_carries_tricky_values_exactly(engine: docker.Engine, cli: str, tmp_path: Path) -> None:
    renderer = EnvFileRenderer()
    for name, (value, reason) in REFUSED.items():
        with pytest.raises(RenderError) as caught:
            renderer.render([Entry(name, value, sensitive=True)], options=OPTIONS)
        assert (
            reason in caught.value.reason and caught.value.key == name and caught.value.target == "env-file"
        )
    entries = [Entry(name, value, sensitive=True) for name, value in CARRIED.items()]
    (file,) = renderer.render(entries, options=OPTIONS)
    path = tmp_path / file.path
    path.write_bytes(file.content)
    env = container_env(engine, path, cli)
    assert {k: env.get(k) for k in CARRIED} == CARRIED
    assert dict(render_oracles.docker_env_file(file.content)) == CARRIED


def docker_env_or_refusal(engine: docker.Engine, env_file: Path, cli: str) -> dict[str, str] | str:
    """What `docker run --env-file` gives a container (engine-set names left out), or NOT_READ."""
    args = ["--env-file", str(env_file), engine.busybox_image(), "/bin/busybox", "env", "-0"]
    proc = engine.docker("run", "--rm", "--network", "host", *args, cli=cli, check=False, env_extra=HOST)
    if proc.returncode != 0:
        assert b"invalid env file" in proc.stderr or b"docker: " in proc.stderr, proc.stderr
        return NOT_READ
    env: dict[str, str] = {}
    for item in proc.stdout.split(b"\x00"):
        if item:
            key, _, value = item.partition(b"=")
            env[key.decode()] = value.decode("utf-8")
    return {k: v for k, v in env.items() if k not in DOCKER_SET}


# What the engine itself puts in a busybox container's environment.
DOCKER_SET = {"PATH", "HOSTNAME", "HOME"}


@pytest.mark.parametrize("cli", docker.docker_clis() or ["docker"])
def test_docker_emulation_agrees_with_the_real_cli_on_every_case(
    engine: docker.Engine, cli: str, tmp_path: Path
) -> None:
    """Every hand-written case of emulation_cases.LINE_CASES, and a file that is not UTF-8, read by the real CLI."""
    seen = {}
    for case, (data, _docker, _podman) in LINE_CASES.items():
        path = tmp_path / f"{case}.env"
        path.write_bytes(data)
        seen[case] = docker_env_or_refusal(engine, path, cli)
    assert seen == {case: want for case, (_data, want, _podman) in LINE_CASES.items()}
    path = tmp_path / "not-utf8.env"
    path.write_bytes(INVALID_UTF8)
    assert docker_env_or_refusal(engine, path, cli) == NOT_READ


# Lines the property tests below build files from: any leading blanks (some that docker trims, some it
# keeps), a name, any value without LF or NUL, sometimes a CR before the LF; comments and blank lines.
LEADING = st.text(
    alphabet=st.sampled_from([" ", "\t", "\x0b", "\x0c", "\xa0", "\u3000", "\x1c", "\x85"]), max_size=2
)
NAME = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Z"), exclude_characters="=#*"),
    min_size=1,
    max_size=6,
).map(lambda tail: "V" + tail)
VALUE = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\x00"), max_size=30)
LINE = st.one_of(
    st.tuples(LEADING, NAME, VALUE, st.sampled_from(["", "\r"])).map(lambda t: f"{t[0]}{t[1]}={t[2]}{t[3]}"),
    VALUE.map(lambda v: "#" + v),
    LEADING,
)
ENV_FILES = st.tuples(st.lists(LINE, min_size=1, max_size=25), st.booleans()).map(
    lambda t: ("\n".join(t[0]) + ("\n" if t[1] else "")).encode()
)
ENGINE_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("cli", docker.docker_clis() or ["docker"])
@ENGINE_SETTINGS
@given(data=ENV_FILES)
def test_docker_emulation_agrees_with_the_real_cli_on_generated_files(
    engine: docker.Engine, cli: str, tmp_path: Path, data: bytes
) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "generated.env"  # hypothesis reuses tmp_path
    path.write_bytes(data)
    try:
        want: dict[str, str] | str = dict(render_oracles.docker_env_file(data, lookup=HOST.get))
    except render_oracles.ParseError:
        want = NOT_READ
    assert docker_env_or_refusal(engine, path, cli) == want


@pytest.mark.parametrize("cli", docker.docker_clis() or ["docker"])
def test_line_limit_is_the_scanners(engine: docker.Engine, cli: str, tmp_path: Path) -> None:
    """LINE_MAX_BYTES is exactly what docker accepts: the renderer's limit and the CLI's agree."""
    name = "LONG"
    fits = "x" * (LINE_MAX_BYTES - len(name) - 1)
    (file,) = EnvFileRenderer().render([Entry(name, fits, sensitive=False)], options=OPTIONS)
    path = tmp_path / file.path
    path.write_bytes(file.content)
    assert container_env(engine, path, cli)[name] == fits
    too_long = fits + "x"
    with pytest.raises(RenderError, match="line limit"):
        EnvFileRenderer().render([Entry(name, too_long, sensitive=False)], options=OPTIONS)
    path.write_bytes(f"{name}={too_long}\n".encode())
    proc = engine.docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--env-file",
        str(path),
        engine.busybox_image(),
        "/bin/busybox",
        "true",
        cli=cli,
        check=False,
    )
    assert proc.returncode != 0 and b"too long" in proc.stderr


def test_a_nul_in_a_container_environment_stops_the_start_and_cuts_nothing(
    engine: docker.Engine, tmp_path: Path
) -> None:
    """Why every env-style target refuses a NUL, and what docs/targets.md says of a k8s Secret used as env:
    the runtime (runc) refuses to start the container rather than pass a shortened value."""
    path = tmp_path / "nul.env"
    path.write_bytes(b"NUL_VALUE=before\x00after\n")
    proc = engine.docker(
        "run", "--rm", "--network", "host", "--env-file", str(path), engine.busybox_image(),
        "/bin/busybox", "env", check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and proc.stdout == b""
    assert b"can't contain null" in proc.stderr


@pytest.fixture(scope="module")
def podman_store() -> Iterator[podman.Store]:
    """A private podman store (podman parses --env-file itself; `create` + `inspect` runs nothing)."""
    reason = podman.missing()
    if reason:
        need(reason)
    with podman.store() as st:
        yield st


def test_podman_reads_the_env_file_exactly(podman_store: podman.Store, tmp_path: Path) -> None:
    entries = [Entry(name, value, sensitive=True) for name, value in CARRIED.items()]
    (file,) = EnvFileRenderer().render(entries, options=OPTIONS)
    path = tmp_path / file.path
    path.write_bytes(file.content)
    env = podman_store.env_from_file(path)
    assert {k: env.get(k) for k in CARRIED} == CARRIED


def podman_env(store: podman.Store, env_file: Path) -> dict[str, str] | str:
    """What `podman create --env-file` gives a container (podman's own names left out), or NOT_READ."""
    try:
        env = store.env_from_file(env_file, extra_env=HOST)
    except RuntimeError as failed:
        assert "parsing env file" in str(failed), failed
        return NOT_READ
    return {k: v for k, v in env.items() if k not in PODMAN_SET}


# What podman itself puts in a container's environment.
PODMAN_SET = {"PATH", "TERM", "container", "HOSTNAME", "HOME"}


def test_podman_emulation_agrees_with_real_podman_on_every_case(
    podman_store: podman.Store, tmp_path: Path
) -> None:
    """Every hand-written case of emulation_cases.LINE_CASES, and a file that is not UTF-8, read by podman."""
    seen = {}
    for case, (data, _docker, _podman) in LINE_CASES.items():
        path = tmp_path / f"{case}.env"
        path.write_bytes(data)
        seen[case] = podman_env(podman_store, path)
    assert seen == {case: want for case, (_data, _docker, want) in LINE_CASES.items()}
    path = tmp_path / "not-utf8.env"
    path.write_bytes(INVALID_UTF8)
    assert podman_env(podman_store, path) != NOT_READ


@ENGINE_SETTINGS
@given(data=ENV_FILES)
def test_podman_emulation_agrees_with_real_podman_on_generated_files(
    podman_store: podman.Store, tmp_path: Path, data: bytes
) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "generated.env"  # hypothesis reuses tmp_path
    path.write_bytes(data)
    try:
        want: dict[str, str] | str = render_oracles.podman_env_file(data, lookup=HOST.get, environ=HOST)
    except render_oracles.ParseError:
        want = NOT_READ
    assert podman_env(podman_store, path) == want
