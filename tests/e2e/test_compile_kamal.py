"""Journey 4 against a real broker process: import a Kamal project, compile it, let Kamal's reading path fetch.

The `.kamal/secrets.production` the CLI writes is read the way Kamal 2.12 reads it with dotenv 3.2.x and
with dotenv 3.1.x (the emulation in tests/support/kamal_oracle.py): its `$(strongroom kamal fetch ...)`
runs the real CLI against the real broker, and every value must come back byte for byte, while nothing the
imported project contained is ever executed.
"""

from __future__ import annotations

import json
import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import need
from tests.e2e.conftest import BrokerProcess
from tests.support import kamal_oracle

pytestmark = pytest.mark.e2e

TRICKY = {
    "DATABASE_URL": 'postgres://microblog:pa$$w0rd#x"z@db:5432/microblog',
    "SECRET_KEY_BASE": "${HOME}$(id)`id`" + "f" * 40,
    "RAILS_MASTER_KEY": "it's (unbalanced ((( ) #{x} ünï \u202e",
    "KAMAL_REGISTRY_PASSWORD": "reg$try pass",
}


def login(broker: BrokerProcess) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    out = broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr


def setup_project(broker: BrokerProcess) -> None:
    login(broker)
    assert broker.cli("projects", "create", "microblog").returncode == 0
    assert broker.cli("envs", "create", "-p", "microblog", "common").returncode == 0
    for env in ("production", "staging"):
        out = broker.cli("envs", "create", "-p", "microblog", env, "--parent", "common")
        assert out.returncode == 0, out.stderr


def put(broker: BrokerProcess, env: str, name: str, value: str) -> None:
    out = broker.cli("secrets", "set", "-p", "microblog", "-e", env, name, input=value.encode())
    assert out.returncode == 0, out.stderr


def kamal_project(root: Path, sentinel: Path) -> None:
    (root / "config").mkdir(parents=True)
    (root / ".kamal").mkdir()
    (root / "config" / "deploy.yml").write_text(
        textwrap.dedent(
            """
            service: microblog
            image: acme/microblog
            servers:
              web:
                - 192.0.2.10
              job:
                hosts: [192.0.2.11]
                cmd: bin/jobs
            proxy:
              ssl: true
              host: microblog.example.com
              app_port: 3000
            registry:
              username: acme
              password:
                - KAMAL_REGISTRY_PASSWORD
            builder:
              arch: amd64
              secrets: [RAILS_MASTER_KEY]
            env:
              clear:
                RAILS_ENV: production
                BUILT_AT: <%= `date` %>
              secret:
                - SECRET_KEY_BASE
                - RAILS_MASTER_KEY
                - DATABASE_URL
            volumes:
              - microblog_storage:/rails/storage
            asset_path: /rails/public/assets
            """
        )
    )
    (root / "config" / "deploy.staging.yml").write_text(
        "servers:\n  web:\n    - 192.0.2.30\n  job:\n    hosts: [192.0.2.30]\n    cmd: bin/jobs\n"
    )
    (root / ".kamal" / "secrets").write_text(
        textwrap.dedent(
            f"""
            # literal values come in (single quotes: nothing expanded); computed ones are listed, never run
            DATABASE_URL='{TRICKY["DATABASE_URL"]}'
            KAMAL_REGISTRY_PASSWORD=$KAMAL_REGISTRY_PASSWORD
            RAILS_MASTER_KEY=$(touch {sentinel}; cat config/master.key)
            SECRET_KEY_BASE=`touch {sentinel}`
            """
        )
    )


def test_kamal_journey(broker: BrokerProcess, tmp_path: Path) -> None:
    if kamal_oracle.RUBY is None:
        need("ruby is not installed (apt-get install ruby)")
    setup_project(broker)
    project = tmp_path / "app"
    sentinel = tmp_path / "pwned"
    kamal_project(project, sentinel)

    # 1. Import without running anything: the literal value is stored, the computed ones are listed.
    out = broker.cli(
        "import",
        "-p",
        "microblog",
        "-e",
        "production",
        "--kamal",
        str(project),
        "--no-input",
        "--manifest-out",
        str(project / "strongroom.yml"),
    )
    assert out.returncode == 1, out.stderr
    assert not sentinel.exists()
    assert "production/RAILS_MASTER_KEY" in out.stdout and "shell command" in out.stdout
    assert "production/KAMAL_REGISTRY_PASSWORD" in out.stdout
    assert "env/clear/BUILT_AT: is computed by ERB" in out.stdout
    assert "asset_path: has no manifest equivalent" in out.stdout
    assert "strongroom secrets set -p microblog -e production RAILS_MASTER_KEY" in out.stderr
    manifest = yaml.safe_load((project / "strongroom.yml").read_text())
    assert manifest["environments"]["staging"]["roles"]["web"]["hosts"] == ["192.0.2.30"]
    assert manifest["registry"]["password"] == "KAMAL_REGISTRY_PASSWORD"
    for value in TRICKY.values():
        assert value not in (project / "strongroom.yml").read_text()

    # 2. The values that need a person, then a check.
    for name in ("SECRET_KEY_BASE", "RAILS_MASTER_KEY"):
        put(broker, "production", name, TRICKY[name])
    put(broker, "common", "KAMAL_REGISTRY_PASSWORD", TRICKY["KAMAL_REGISTRY_PASSWORD"])
    check = broker.cli("check", "-e", "production", "-t", "kamal", "-f", str(project / "strongroom.yml"))
    assert check.returncode == 0, check.stdout + check.stderr

    # 3. Compile for Kamal.
    out = broker.cli(
        "compile",
        "-e",
        "production",
        "-t",
        "kamal",
        "-f",
        str(project / "strongroom.yml"),
        "-o",
        str(project),
    )
    assert out.returncode == 0, out.stderr
    secrets_file = project / ".kamal" / "secrets.production"
    for path in (
        secrets_file,
        project / "config" / "deploy.production.yml",
        project / "config" / "deploy.yml",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        for value in TRICKY.values():
            assert value not in path.read_text()

    # 4. Kamal reads .kamal/secrets-common then .kamal/secrets.production; the old literal file is unused.
    for dotenv in kamal_oracle.DOTENV_VERSIONS:
        got = kamal_oracle.read_secrets(
            project / ".kamal", "production", env=broker.env, cwd=project, dotenv=dotenv
        )
        assert got.pop("STRONGROOM_DOTENV") == ("3.2" if dotenv == "3.2" else "${STRONGROOM_DOTENV_ORDER}")
        for name in ("STRONGROOM_SECRETS", "STRONGROOM_DOTENV_ORDER"):
            got.pop(name)
        assert got == TRICKY, dotenv
    assert not sentinel.exists()

    # 5. `strongroom kamal fetch` itself, read by `kamal secrets extract` and what each dotenv does next.
    for dotenv in kamal_oracle.DOTENV_VERSIONS:
        out = broker.cli("kamal", "fetch", "--dotenv", dotenv, "-p", "microblog", "-e", "production", *TRICKY)
        assert out.returncode == 0, out.stderr
        (argument,) = kamal_oracle.ruby_shellsplit(out.stdout.removesuffix("\n"))
        for name, value in TRICKY.items():
            extracted = kamal_oracle.kamal_secrets_extract(name, argument)
            if dotenv == "3.2":
                extracted = kamal_oracle.substitute_variables(extracted, {}, broker.env)
            assert extracted == value
    for bad in ([], ["--dotenv", "3.0"]):
        out = broker.cli("kamal", "fetch", *bad, "-p", "microblog", "-e", "production", "DATABASE_URL")
        assert out.returncode == 1 and out.stdout == "", out.stderr
        assert "dotenv" in out.stderr and TRICKY["DATABASE_URL"] not in out.stderr
    plain = broker.cli("kamal", "fetch", "-p", "microblog", "-e", "production", "--json", "DATABASE_URL")
    assert json.loads(plain.stdout) == {"DATABASE_URL": TRICKY["DATABASE_URL"]}
    missing = broker.cli(
        "kamal", "fetch", "--dotenv", "3.2", "-p", "microblog", "-e", "production", "DATABASE_URL", "NOPE"
    )
    assert missing.returncode == 1 and missing.stdout == "" and "NOPE" in missing.stderr


def test_diff_and_check_never_print_values(broker: BrokerProcess, tmp_path: Path) -> None:
    setup_project(broker)
    put(broker, "production", "DATABASE_URL", TRICKY["DATABASE_URL"])
    put(broker, "staging", "DATABASE_URL", "postgres://staging")
    put(broker, "staging", "ONLY_STAGING", "x" * 20)
    put(broker, "common", "SHARED", "same everywhere")
    out = broker.cli("diff", "-p", "microblog", "staging", "production")
    assert out.returncode == 0, out.stderr
    assert "ONLY_STAGING" in out.stdout and "only in staging" in out.stdout
    assert "DATABASE_URL" in out.stdout and "differs" in out.stdout
    assert "SHARED" not in out.stdout
    manifest = tmp_path / "strongroom.yml"
    manifest.write_text(
        "project: microblog\nservice: microblog\nenv:\n  secret: [DATABASE_URL, MISSING]\n  clear:\n    API_TOKEN: abc\n"
    )
    out = broker.cli("check", "-e", "production", "-f", str(manifest))
    assert out.returncode == 1
    assert "env/secret/1: MISSING is not stored in production" in out.stdout
    assert "env/clear/API_TOKEN: looks like a secret" in out.stdout
    for text in broker.outputs:
        assert (
            TRICKY["DATABASE_URL"] not in text and "postgres://staging" not in text and "x" * 20 not in text
        )


def test_compile_writes_value_files_0600(broker: BrokerProcess, tmp_path: Path) -> None:
    setup_project(broker)
    put(broker, "production", "DATABASE_URL", TRICKY["DATABASE_URL"])
    manifest = tmp_path / "strongroom.yml"
    manifest.write_text(
        "project: microblog\nservice: microblog\nenv:\n  secret: [DATABASE_URL]\n  clear: {RAILS_ENV: production}\n"
    )
    out_dir = tmp_path / "out"
    out = broker.cli(
        "compile",
        "-e",
        "production",
        "-t",
        "json",
        "-t",
        "dotenv-export",
        "-f",
        str(manifest),
        "-o",
        str(out_dir),
    )
    assert out.returncode == 0, out.stderr
    written = [p for p in out_dir.rglob("*") if p.is_file()]
    assert len(written) == 2
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert data == {"DATABASE_URL": TRICKY["DATABASE_URL"], "RAILS_ENV": "production"}
    assert TRICKY["DATABASE_URL"] not in out.stdout + out.stderr
