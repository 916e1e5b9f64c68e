"""Journey 4 on the seed app's own Kamal project (tests/support/rails_app/kamal), against a real broker.

`strongroom import --kamal` brings what it can and writes placeholders where ERB hid the hosts; `check -t
kamal` then names what Kamal 2.12 would refuse (builder/arch; SSL on two web hosts), `compile -t kamal`
writes nothing while it does, and once the manifest says what Kamal needs, the files are written and the
configuration they make is loaded by the Kamal 2.12.0 loader emulation (tests/support/kamal_loader.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import BrokerProcess
from tests.support import kamal_loader

pytestmark = pytest.mark.e2e

SEED = Path(__file__).resolve().parents[1] / "support" / "rails_app" / "kamal"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUseed\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGseed\n-----END PRIVATE KEY-----\n"


def run(broker: BrokerProcess, *args: str, input: str | None = None) -> tuple[int, str, str]:
    done = broker.cli(*args, input=input.encode() if input is not None else None)
    return done.returncode, done.stdout, done.stderr


def setup(broker: BrokerProcess) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    assert (
        run(broker, "login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))[
            0
        ]
        == 0
    )
    assert run(broker, "projects", "create", "microblog")[0] == 0
    assert run(broker, "envs", "create", "-p", "microblog", "production")[0] == 0


def put(broker: BrokerProcess, name: str, value: str) -> None:
    code, _out, err = run(broker, "secrets", "set", "-p", "microblog", "-e", "production", name, input=value)
    assert code == 0, err


def test_seed_kamal_project_to_a_configuration_kamal_loads(broker: BrokerProcess, tmp_path: Path) -> None:
    setup(broker)
    app = tmp_path / "app"
    shutil.copytree(SEED, app)
    manifest = app / "strongroom.yml"

    # 1. Import: literal secrets stored, computed ones listed, hosts hidden by ERB become placeholders.
    code, out, err = run(
        broker, "import", "-p", "microblog", "-e", "production", "--kamal", str(app), "--no-input",
        "--manifest-out", str(manifest),
    )  # fmt: skip
    assert code == 1, out + err
    assert "fill in: " in err and "servers/web/hosts" in err and "builder/arch" in err
    code, out, err = run(broker, "check", "-e", "production", "-f", str(manifest))
    assert code == 1 and "roles/web/hosts/0: is a placeholder" in err

    # 2. Fill in the hosts (two web servers, as the seed runs) and the values import could not read.
    text = (
        manifest.read_text()
        .replace("- servers-web-hosts.fill-in.invalid", "- 192.0.2.10\n    - 192.0.2.11")
        .replace("servers-job-hosts-0.fill-in.invalid", "192.0.2.12")
        .replace("accessories-db-host.fill-in.invalid", "192.0.2.20")
    )
    manifest.write_text(text)
    for name in ("KAMAL_REGISTRY_PASSWORD", "RAILS_MASTER_KEY"):
        put(broker, name, f"{name.lower()}-value")

    # 3. What Kamal 2.12 would refuse is named, and compile writes nothing.
    code, out, _err = run(broker, "check", "-e", "production", "-t", "kamal", "-f", str(manifest))
    assert code == 1, out
    assert "targets/kamal: builder/arch: is not set" in out
    assert "targets/kamal: roles/web/hosts: lists 2 servers while proxy/ssl is true" in out
    out_dir = tmp_path / "out"
    code, _out, err = run(
        broker, "compile", "-e", "production", "-t", "kamal", "-f", str(manifest), "-o", str(out_dir)
    )
    assert code != 0 and "builder/arch" in err
    assert not out_dir.exists() or not any(out_dir.rglob("*"))

    # 4. Say what Kamal needs: an arch, and a certificate of our own for two servers.
    body = yaml.safe_load(manifest.read_text())
    body["builder"] = {"arch": "amd64"}
    body["proxy"]["ssl"] = {"certificate_pem": "TLS_CERTIFICATE", "private_key_pem": "TLS_PRIVATE_KEY"}
    manifest.write_text(yaml.safe_dump(body, sort_keys=False))
    put(broker, "TLS_CERTIFICATE", CERT)
    put(broker, "TLS_PRIVATE_KEY", KEY)
    code, out, _err = run(broker, "check", "-e", "production", "-t", "kamal", "-f", str(manifest))
    assert code == 0, out
    code, _out, err = run(
        broker, "compile", "-e", "production", "-t", "kamal", "-f", str(manifest), "-o", str(out_dir)
    )
    assert code == 0, err
    config = kamal_loader_config(out_dir)
    assert kamal_loader.refusals(config) == []
    assert config["proxy"]["ssl"] == {
        "certificate_pem": "TLS_CERTIFICATE",
        "private_key_pem": "TLS_PRIVATE_KEY",
    }
    assert config["env"]["clear"]["DATABASE_HOST"] == "microblog-postgres-primary-2024.internal"
    secrets = (out_dir / ".kamal" / "secrets.production").read_text()
    assert "TLS_CERTIFICATE=$(kamal secrets extract TLS_CERTIFICATE" in secrets
    for text in broker.outputs:
        assert "MIIBszCCAVmgAwIBAgIUseed" not in text and 'pa$1wor$D#x"q' not in text


def kamal_loader_config(out_dir: Path) -> dict[str, object]:
    from broker.domain.manifest import deep_merge

    base = yaml.safe_load((out_dir / "config" / "deploy.yml").read_text())
    destination = yaml.safe_load((out_dir / "config" / "deploy.production.yml").read_text()) or {}
    return deep_merge(base, destination)
