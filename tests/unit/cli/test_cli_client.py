"""`cli.client`: URL and transport rules, problem JSON to one sentence, typed parsing, TLS with a CA file.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, Invoke, canary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standin_broker import StandinBroker

from cli.client import BrokerClient, BrokerError, parse_broker_url
from cli.client import transport as client_transport
from cli.errors import CliError


def authed(broker: StandinBroker, *, ca_file: str | None = None) -> BrokerClient:
    return BrokerClient(broker.url, token=broker.issue(CLIENT_ID), ca_file=ca_file)


# --- URLs


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://Broker.Example/", "https://broker.example"),
        ("https://broker.example:8443/strongroom/", "https://broker.example:8443/strongroom"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("  https://broker.example  ", "https://broker.example"),
    ],
)
def test_broker_urls_are_canonicalised(given: str, canonical: str) -> None:
    assert parse_broker_url(given).text == canonical


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("broker.example", "must start with https://"),
        ("ftp://broker.example", "must start with https://"),
        ("https://", "has no host"),
        ("https://user:pw@broker.example", "must not carry a user name or password"),
        ("https://broker.example/?token=x", "must not have a query or fragment"),
        ("https://broker.example:99999", "is not a valid URL"),
    ],
)
def test_bad_broker_urls_are_refused_in_one_sentence(given: str, problem: str) -> None:
    with pytest.raises(CliError, match=problem):
        parse_broker_url(given)


@pytest.mark.parametrize(
    "template",
    [
        "https://user:{secret}@broker.example",
        "https://u:{secret}@broker.example:99999",
        "https://b.example/?t={secret}",
    ],
)
def test_a_bad_url_is_never_quoted_back(template: str) -> None:
    secret = canary()

    with pytest.raises(CliError) as caught:
        parse_broker_url(template.format(secret=secret))

    assert secret not in caught.value.message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "http://127.8.9.10", "http://localhost:8200", "http://[::1]:8200"]
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    assert BrokerClient(url).url.startswith("http://")


@pytest.mark.parametrize("url", ["http://broker.example", "http://10.0.0.5:8200", "http://[2001:db8::1]"])
def test_plain_http_elsewhere_needs_insecure(url: str) -> None:
    with pytest.raises(
        CliError, match=r"refusing plain http to .*: the token and secrets would cross the network"
    ):
        BrokerClient(url)

    assert BrokerClient(url, insecure=True).url.startswith("http://")


def test_a_base_path_prefixes_every_route(broker: StandinBroker) -> None:
    client = BrokerClient(f"{broker.url}/strongroom/", token="srt_x")

    with pytest.raises(BrokerError):
        client.list_projects()

    assert broker.calls()[0].target == "/strongroom/v1/projects"


def test_names_are_quoted_into_exactly_one_path_segment(broker: StandinBroker) -> None:
    client = authed(broker)

    with pytest.raises(BrokerError):
        client.get_secret(project="shop", environment="..", name="A/B?c=d")

    assert broker.calls()[0].target == "/v1/projects/shop/environments/../secrets/A%2FB%3Fc%3Dd"


# --- errors


def test_problem_detail_becomes_the_message_and_status_is_kept(broker: StandinBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        authed(broker).list_environments(project="nope")

    assert caught.value.status == 404
    assert caught.value.message == "projects/nope: not found"
    assert caught.value.exit_code == 1


def test_too_many_requests_says_when_to_try_again(broker: StandinBroker) -> None:
    broker.override(
        "POST",
        "/v1/auth/token",
        429,
        {"detail": "too many failed authentications."},
        headers={"Retry-After": "30"},
    )

    with pytest.raises(BrokerError) as caught:
        BrokerClient(broker.url).issue_token(client_id=CLIENT_ID, client_secret="x")

    assert caught.value.message == "too many failed authentications; try again in 30 seconds"


def test_an_error_without_problem_json_names_the_status(broker: StandinBroker) -> None:
    broker.override("GET", "/v1/projects", 502, raw=b"<html>bad gateway</html>")

    with pytest.raises(BrokerError) as caught:
        authed(broker).list_projects()

    assert caught.value.message == "the broker answered HTTP 502 Bad Gateway"


def test_the_client_secret_is_masked_out_of_an_error_detail(broker: StandinBroker) -> None:
    secret = canary()
    broker.override("POST", "/v1/auth/token", 400, {"detail": f"client_secret {secret} is malformed"})

    with pytest.raises(BrokerError) as caught:
        BrokerClient(broker.url).issue_token(client_id=CLIENT_ID, client_secret=secret)

    assert caught.value.message == "client_secret ******** is malformed"


def test_a_success_that_is_not_json_is_one_sentence(broker: StandinBroker) -> None:
    broker.override("GET", "/v1/projects", 200, raw=b"hello")

    with pytest.raises(CliError, match="answered GET /v1/projects with something that is not JSON"):
        authed(broker).list_projects()


def test_an_unexpected_shape_names_the_field_but_not_the_value(broker: StandinBroker) -> None:
    secret = canary()
    broker.override(
        "GET",
        "/v1/projects/shop/environments/production/resolved",
        200,
        {
            "project": "shop",
            "environment": "production",
            "values": {
                "DB_PASSWORD": {
                    "value": secret,
                    "version": "1",
                    "environment": "production",
                    "sensitive": True,
                }
            },
        },
    )

    with pytest.raises(CliError) as caught:
        authed(broker).resolved(project="shop", environment="production")

    assert caught.value.message == (
        "the broker sent an unexpected response: resolved.values.DB_PASSWORD.version is not an integer"
    )
    assert secret not in caught.value.message


def test_a_boolean_is_not_accepted_as_an_integer(broker: StandinBroker) -> None:
    broker.override(
        "GET",
        "/v1/projects/shop/environments/production/secrets",
        200,
        {
            "secrets": [
                {
                    "name": "A",
                    "version": True,
                    "sensitive": True,
                    "deleted": False,
                    "created_at": "t",
                    "updated_at": "t",
                }
            ],
        },
    )

    with pytest.raises(CliError, match=r"response.secrets\[0\].version is not an integer"):
        authed(broker).list_secrets(project="shop", environment="production")


def test_an_oversized_response_is_refused(broker: StandinBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_transport, "MAX_RESPONSE_BYTES", 64)
    broker.override("GET", "/v1/projects", 200, {"projects": [], "padding": "x" * 100})

    with pytest.raises(CliError, match="larger than 16 MiB"):
        authed(broker).list_projects()


def test_reprs_of_results_never_show_values_or_tokens(broker: StandinBroker) -> None:
    secret = canary()
    broker.put("shop", "production", "DB_PASSWORD", secret)
    client = authed(broker)

    token = BrokerClient(broker.url).issue_token(
        client_id=CLIENT_ID, client_secret=broker.clients[CLIENT_ID].secret
    )
    found = client.get_secret(project="shop", environment="production", name="DB_PASSWORD")
    resolved = client.resolved(project="shop", environment="production")

    assert found.value == secret and resolved.values["DB_PASSWORD"].value == secret
    for text in (repr(found), repr(resolved), repr(resolved.values["DB_PASSWORD"]), repr(token)):
        assert secret not in text
        assert token.token not in text


def test_the_connection_is_reused_across_requests(broker: StandinBroker) -> None:
    client = authed(broker)

    client.list_projects()
    first = client._connection
    client.list_environments(project="shop")

    assert first is not None and client._connection is first
    assert first.sock is not None


def test_a_failed_stream_leaves_the_client_usable(broker: StandinBroker) -> None:
    broker.override("GET", "/v1/audit/export", 403, {"detail": "this token has no audit action"})
    client = authed(broker)
    received: list[bytes] = []

    with pytest.raises(BrokerError, match="no audit action") as caught:
        client.audit_export({"format": "ndjson"}, received.append)

    assert caught.value.status == 403 and received == []
    assert [p.slug for p in client.list_projects()] == ["shop"]


def test_a_streamed_body_arrives_whole(broker: StandinBroker) -> None:
    lines = b"".join(b'{"seq": %d}\n' % i for i in range(5000))
    broker.override("GET", "/v1/audit/export", 200, raw=lines)
    received: list[bytes] = []

    authed(broker).audit_export({}, received.append)

    assert b"".join(received) == lines


def test_a_broker_path_a_request_line_cannot_carry_is_refused_without_quoting_it() -> None:
    with pytest.raises(CliError, match="request line cannot carry") as caught:
        BrokerClient("http://127.0.0.1:1/a path/x")

    assert "a path" not in caught.value.message


def test_an_unreachable_broker_is_one_sentence_naming_the_url() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        # Bound but not listening: the connection is refused at once.
        with pytest.raises(CliError, match=f"cannot reach the broker at http://127.0.0.1:{port}"):
            BrokerClient(f"http://127.0.0.1:{port}").list_projects()


# --- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A private CA (its certificate in a file) and a server context for 127.0.0.1 signed by it."""
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strongroom test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


@pytest.fixture
def tls_broker(pki: tuple[Path, ssl.SSLContext], client_secret: str) -> Iterator[StandinBroker]:
    standin = StandinBroker()
    standin.add_client(CLIENT_ID, client_secret)
    standin.add_project("shop")
    standin.start(tls=pki[1])
    try:
        yield standin
    finally:
        standin.stop()


def test_https_with_the_configured_ca_file_works(
    tls_broker: StandinBroker, pki: tuple[Path, ssl.SSLContext]
) -> None:
    client = authed(tls_broker, ca_file=str(pki[0]))

    assert [p.slug for p in client.list_projects()] == ["shop"]
    assert tls_broker.url.startswith("https://")


def test_https_to_a_certificate_no_trusted_ca_signed_is_refused_before_the_token_is_sent(
    tls_broker: StandinBroker,
) -> None:
    client = authed(tls_broker)

    with pytest.raises(
        CliError, match=r"cannot verify the TLS certificate of 127\.0\.0\.1 .*STRONGROOM_CA_FILE"
    ):
        client.list_projects()

    assert tls_broker.calls() == []


def test_a_missing_ca_file_is_one_sentence(tls_broker: StandinBroker, tmp_path: Path) -> None:
    with pytest.raises(CliError, match=f"cannot load the CA file {tmp_path / 'nope.pem'}: "):
        authed(tls_broker, ca_file=str(tmp_path / "nope.pem")).list_projects()


def test_the_cli_takes_the_ca_file_from_strongroom_ca_file(
    tls_broker: StandinBroker, pki: tuple[Path, ssl.SSLContext], cli: Invoke
) -> None:
    env = {
        "STRONGROOM_URL": tls_broker.url,
        "STRONGROOM_TOKEN": tls_broker.issue(CLIENT_ID),
        "STRONGROOM_CA_FILE": str(pki[0]),
    }
    result = cli("projects", "list", env=env)

    assert result.exit_code == 0, result.output
    assert "shop" in result.stdout
