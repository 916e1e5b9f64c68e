"""The seed app's hard values through `compile --target kamal`, Kamal 2.12 and a real `docker run --env-file`.

Kamal itself cannot be installed here (no rubygems.org), so its reading of `.kamal/secrets*` is the
emulation of Kamal 2.12 with dotenv 3.2.x and with dotenv 3.1.x in tests/support/kamal_oracle.py; the
`$(strongroom kamal fetch ...)` and `printf` it runs are real (the CLI against a real broker process), so
is the env file's consumer (a dockerd of the test's own and `docker run --env-file`) and the shell that
reads the registry password's word. Every value must arrive byte for byte under both dotenv versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.e2e.conftest import BrokerProcess
from tests.e2e.test_compile_kamal import put, setup_project
from tests.support import docker, kamal_oracle

pytestmark = pytest.mark.e2e

IN_ENV = {
    "DATABASE_URL": "postgres://app:pa$1wor$D#x@db:5432/app",
    "UPLOAD_DIR": "a$HOME/b",
    "OTHER_REF": "x${OTHER}y",
    "HOLDER_REF": "x${STRONGROOM_SECRETS}y",
    "ORDER_REF": "x${STRONGROOM_DOTENV_ORDER}$STRONGROOM_DOTENV",
    "SHELLISH": "x`id`$(id)y",
    "ERB_TEXT": "<%= 1+1 %>",
    "QUOTES": "it's \"q\" 'q' # not a comment",
    "DOLLARS": "$ $$ ${ $} $( ends in $",
    "RAILS_MASTER_KEY": "0123456789abcdef" * 2,
    "SECRET_KEY_BASE": "fedcba9876543210" * 8,
}
REGISTRY_PASSWORD = 'reg$1pa"ss'
ALL = {**IN_ENV, "KAMAL_REGISTRY_PASSWORD": REGISTRY_PASSWORD}
SETTINGS = {"STRONGROOM_SECRETS", "STRONGROOM_DOTENV", "STRONGROOM_DOTENV_ORDER"}

MANIFEST = f"""
project: microblog
service: microblog
image: acme/microblog
registry:
  username: acme
  password: KAMAL_REGISTRY_PASSWORD
roles:
  web:
    hosts: [192.0.2.10]
builder:
  arch: amd64
env:
  clear:
    RAILS_ENV: production
  secret: [{", ".join(IN_ENV)}]
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.Engine]:
    """A dockerd of the test's own, with the busybox image imported."""
    reason = docker.missing()
    if reason:
        need(reason)
    with docker.engine() as eng:
        eng.busybox_image()
        yield eng


def container_env(engine: docker.Engine, env_file: Path) -> dict[bytes, bytes]:
    """The environment bytes a container started with `docker run --env-file env_file` sees."""
    out = engine.run(["--env-file", str(env_file), engine.busybox_image(), "/bin/busybox", "env", "-0"])
    return dict(item.partition(b"=")[::2] for item in out.split(b"\x00") if item)


@pytest.mark.parametrize("dotenv", kamal_oracle.DOTENV_VERSIONS)
def test_seed_values_reach_the_container_exactly(
    broker: BrokerProcess, engine: docker.Engine, tmp_path: Path, dotenv: kamal_oracle.Dotenv
) -> None:
    if kamal_oracle.RUBY is None:
        need("ruby is not installed (apt-get install ruby)")
    setup_project(broker)
    for name, value in ALL.items():
        put(broker, "production", name, value)
    project = tmp_path / "app"
    project.mkdir()
    manifest = project / "strongroom.yml"
    manifest.write_text(MANIFEST)
    check = broker.cli("check", "-e", "production", "-t", "kamal", "-f", str(manifest))
    assert check.returncode == 0, check.stdout + check.stderr
    out = broker.cli("compile", "-e", "production", "-t", "kamal", "-f", str(manifest), "-o", str(project))
    assert out.returncode == 0, out.stderr
    written = "".join(p.read_text() for p in project.rglob("*") if p.is_file())
    for value in ALL.values():
        if len(value) > 12:
            assert value not in written

    # What Kamal 2.12 reads (and `kamal secrets print` shows) with this dotenv.
    secrets = kamal_oracle.read_secrets(
        project / ".kamal", "production", env=broker.env, cwd=project, dotenv=dotenv
    )
    assert {k: v for k, v in secrets.items() if k not in SETTINGS} == ALL
    printed = kamal_oracle.secrets_print(secrets)
    for name, value in ALL.items():
        assert f"\n{name}={value}\n" in printed

    # The registry login: `docker login -u ... -p "<escaped>"` read by a shell.
    word = kamal_oracle.shell_word(secrets["KAMAL_REGISTRY_PASSWORD"])
    assert kamal_oracle.sh_word(word) == REGISTRY_PASSWORD

    # The container: Kamal's env file fed to a real `docker run --env-file`.
    env_file = tmp_path / "web.env"
    env_file.write_text(kamal_oracle.env_file({"RAILS_ENV": "production"} | {n: secrets[n] for n in IN_ENV}))
    seen = container_env(engine, env_file)
    for name, value in IN_ENV.items():
        assert seen[name.encode()] == value.encode(), name
    assert seen[b"RAILS_ENV"] == b"production"
