"""Catalogue F/35 against the real consumers: `docker run --env-file` on a dockerd the test starts,
and podman's own env-file parser (`podman create --env-file` + `podman inspect`).

Every docker CLI on the machine is tried (the env file is parsed client side: the 28.x CLI's
pkg/kvfile and Debian's 20.10 opts/file.go). One container run per CLI carries the whole batch of
tricky values; the container prints its environment with `busybox env -0`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.renderers.base import Entry, RenderError, RenderOptions
from broker.renderers.envfile import LINE_MAX_BYTES, EnvFileRenderer
from tests.conftest import need
from tests.support import docker, podman, render_oracles

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


@pytest.mark.parametrize("cli", docker.docker_clis() or ["docker"])
def test_kvfile_port_agrees_with_the_real_cli(engine: docker.Engine, cli: str, tmp_path: Path) -> None:
    """The port used by the property tests reads hand-written edge cases exactly as docker does."""
    raw = (
        "\ufeffFIRST=bom stripped from line one\n"
        "   INDENTED=leading whitespace of the line is dropped\n"
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "EMPTY=\n"
        "SQ='single quotes kept'\n"
        'DQ="double quotes kept"\n'
        "CRLF=carriage return dropped\r\n"
        "MIDCR=a\rb\n"
        "FROM_HOST\n"
        "NOT_ON_HOST\n"
        "TRAIL=trailing spaces kept   \n"
        "LAST=no final newline"
    ).encode()
    path = tmp_path / "raw.env"
    path.write_bytes(raw)
    host = {"FROM_HOST": "read from the CLI's own environment"}
    env = container_env(engine, path, cli, extra_env=host)
    port = dict(render_oracles.docker_env_file(raw, lookup=host.get))
    assert port["FROM_HOST"] == host["FROM_HOST"] and "NOT_ON_HOST" not in port
    assert {k: env.get(k) for k in port} == port
    assert "NOT_ON_HOST" not in env


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


def test_podman_port_agrees_with_real_podman(podman_store: podman.Store, tmp_path: Path) -> None:
    raw = (
        b"   INDENTED=leading whitespace of the line is dropped\n"
        b"# a comment\n"
        b"EMPTY=\n"
        b"SQ='single quotes kept'\n"
        b"CRLF=carriage return dropped\r\n"
        b"FROM_HOST\n"
        b"TRAIL=trailing spaces kept   \n"
    )
    path = tmp_path / "raw.env"
    path.write_bytes(raw)
    host = {"FROM_HOST": "read from podman's own environment"}
    env = podman_store.env_from_file(path, extra_env=host)
    port = render_oracles.podman_env_file(raw, lookup=host.get)
    assert {k: env.get(k) for k in port} == port
