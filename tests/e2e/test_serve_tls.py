"""`strongroom-server serve` with TLS (a locally made CA) and its refusal of plain HTTP off loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.cli import main as server_cli
from broker.config import get_settings
from tests.e2e.conftest import BIN, BrokerProcess, stop
from tests.support.ports import free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_server(dir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("strongroom test CA"))
        .issuer_name(_name("strongroom test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = dir / "ca.pem", dir / "server.pem", dir / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_pem.chmod(0o600)
    return ca_pem, cert_pem, key_pem


def wait_up_tls(port: int, proc: subprocess.Popen[bytes], ca: Path, deadline: float = 120.0) -> None:
    """Poll https://127.0.0.1:port/up, trusting only the test CA, until it answers (readiness, not a sleep)."""
    context = ssl.create_default_context(cafile=str(ca))
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/up", context=context, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # not bound yet; poll again
    raise RuntimeError("broker did not come up")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[BrokerProcess, Path]]:
    ca, cert, key = make_ca_and_server(tmp_path)
    port = free_port()
    data_dir, config_dir, log = tmp_path / "data", tmp_path / "home" / ".config", tmp_path / "broker.log"
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(config_dir.parent),
        "XDG_CONFIG_HOME": str(config_dir),
        "STRONGROOM_DATA_DIR": str(data_dir),
        "LANG": "C.UTF-8",
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [
                str(BIN / "strongroom-server"),
                "serve",
                "--port",
                str(port),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    b = BrokerProcess(f"https://127.0.0.1:{port}", port, data_dir, env, proc, log)
    try:
        wait_up_tls(port, proc, ca)
        yield b, ca
    finally:
        stop(b)


def test_the_cli_talks_to_the_broker_over_https_with_a_ca_file(
    tls_broker: tuple[BrokerProcess, Path],
) -> None:
    broker, ca = tls_broker
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    assert f"strongroom login --url {broker.url}" in broker.server_output()
    assert f"strongroom broker on {broker.url}" in broker.server_output()

    out = broker.cli(
        "--ca-file",
        str(ca),
        "login",
        "--url",
        broker.url,
        "--client-id",
        "admin",
        "--secret-file",
        str(secret_file),
    )
    assert out.returncode == 0, out.stderr
    out = broker.cli("--ca-file", str(ca), "--url", broker.url, "projects", "create", "shop")
    assert out.returncode == 0, out.stderr

    # Without the CA the certificate is not trusted: the CLI refuses rather than talk in the clear.
    out = broker.cli("--url", broker.url, "projects", "create", "other")
    assert out.returncode != 0
    # Plain HTTP to the TLS port gets no API answer.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{broker.port}/up", timeout=5).read()


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"STRONGROOM_DATA_DIR": str(tmp_path / "data")}
    get_settings.cache_clear()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "broker.example"])
def test_plain_http_off_loopback_is_refused_in_one_sentence(host: str, server_env: dict[str, str]) -> None:
    r = CliRunner().invoke(server_cli, ["serve", "--host", host], env=server_env)

    assert r.exit_code == 2
    assert f"--host: {host} is not loopback, and plain HTTP there would carry tokens" in r.output
    assert "--allow-plain-http" in r.output
    assert not Path(server_env["STRONGROOM_DATA_DIR"]).exists()  # refused before anything was set up


def test_a_certificate_without_its_key_is_refused(server_env: dict[str, str], tmp_path: Path) -> None:
    _, cert, _ = make_ca_and_server(tmp_path)
    r = CliRunner().invoke(server_cli, ["serve", "--tls-cert", str(cert)], env=server_env)

    assert r.exit_code == 2
    assert "--tls-key (STRONGROOM_TLS_KEY_FILE): TLS needs both a certificate and its key" in r.output


def test_a_missing_certificate_file_is_named(server_env: dict[str, str], tmp_path: Path) -> None:
    _, _, key = make_ca_and_server(tmp_path)
    r = CliRunner().invoke(
        server_cli, ["serve", "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)], env=server_env
    )

    assert r.exit_code == 2
    assert f"--tls-cert: {tmp_path / 'nope.pem'}: no such file" in r.output


def test_a_tls_key_readable_by_others_is_refused(server_env: dict[str, str], tmp_path: Path) -> None:
    _, cert, key = make_ca_and_server(tmp_path)
    key.chmod(0o644)
    r = CliRunner().invoke(
        server_cli, ["serve", "--tls-cert", str(cert), "--tls-key", str(key)], env=server_env
    )

    assert r.exit_code == 2
    assert f"--tls-key: TLS key {key} is readable by others (mode 644); chmod 600 it" in r.output


@pytest.mark.parametrize(
    ("host", "extra", "allowed"),
    [
        ("127.0.0.1", {}, True),
        ("127.0.0.2", {}, True),
        ("::1", {}, True),
        ("localhost", {}, True),
        ("0.0.0.0", {}, False),
        ("0.0.0.0", {"allow_plain_http": True}, True),
        ("10.1.2.3", {"allow_plain_http": True}, True),
    ],
)
def test_which_binds_serve_plain_http(
    host: str, extra: dict[str, bool], allowed: bool, tmp_path: Path
) -> None:
    """The one decision, on settings (STRONGROOM_ALLOW_PLAIN_HTTP=true sets `allow_plain_http`)."""
    import click

    from broker.cli import _check_transport
    from broker.config import Settings

    settings = Settings(data_dir=tmp_path, host=host, **extra)
    if allowed:
        _check_transport(settings)
    else:
        with pytest.raises(click.UsageError, match="is not loopback"):
            _check_transport(settings)


def test_the_allow_plain_http_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.config import Settings

    monkeypatch.setenv("STRONGROOM_ALLOW_PLAIN_HTTP", "true")
    assert Settings().allow_plain_http is True
