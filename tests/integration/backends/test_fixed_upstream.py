"""K57 (fixed upstream) and D27 (proxy scope): the upstream address, region and prefix come from the backends
file only. Client-sent fields do nothing, redirects are not followed (so the broker's Vault token or AWS
signature never reaches another host), private and metadata addresses are refused unless allow-listed,
and paths outside the mapped prefix or ARNs of another account are refused before any upstream call.
Requests are counted at the server side: a CountingProxy in front of the real upstream, and a decoy
FakeUpstream that must see nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.backends import guard
from broker.backends.config import parse
from broker.errors import Forbidden, Invalid
from tests.integration.backends.conftest import (
    AWS_ACCOUNT,
    PROJECT,
    aws_backend,
    backends_doc,
    env_mapping,
    start_broker,
    stop_broker,
    vault_backend,
    write_private,
)
from tests.support import upstreams

URL = f"/v1/projects/{PROJECT}/environments/production/secrets/DB_URL"
IMPORT = f"/v1/projects/{PROJECT}/environments/staging/import"


@pytest.fixture
def decoy() -> Iterator[upstreams.FakeUpstream]:
    f = upstreams.FakeUpstream(lambda *a: (200, {"Content-Type": "application/json"}, b"{}")).start()
    yield f
    f.stop()


@pytest.fixture(params=["vault", "aws"])
def proxied(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Any, Any, dict[str, str], upstreams.CountingProxy]]:
    """A broker whose upstream (OpenBao or moto) sits behind a counting proxy."""
    kind: str = request.param
    if kind == "vault":
        bao: upstreams.Bao = request.getfixturevalue("bao")
        proxy = upstreams.CountingProxy(bao.port).start()
        token_file = write_private(tmp_path / "vault-token", bao.token)
        entry = vault_backend(proxy.address, token_file, "k57")
    else:
        moto: upstreams.Moto = request.getfixturevalue("moto")
        proxy = upstreams.CountingProxy(moto.port).start()
        entry = aws_backend(proxy.address, "k57")
    client, rt, h = start_broker(tmp_path, backends_doc({kind: entry}, [env_mapping(kind)]))
    try:
        yield kind, client, rt, h, proxy
    finally:
        stop_broker(client, rt)
        proxy.stop()


def test_client_fields_named_like_upstream_settings_have_no_effect(
    proxied: Any, decoy: upstreams.FakeUpstream
) -> None:
    kind, client, _rt, h, proxy = proxied
    assert client.put(URL, json={"value": "v1"}, headers=h).status_code == 200
    hostile = {
        "vault_addr": decoy.address,
        "endpoint_url": decoy.address,
        "region": "eu-west-9",
        "X-Vault-Addr": decoy.address,
        "X-Vault-Namespace": "evil",
        "X-Amz-Region": "eu-west-9",
    }
    r = client.get(
        URL,
        params={"vault_addr": decoy.address, "endpoint_url": decoy.address, "region": "eu-west-9"},
        headers={**h, **hostile},
    )
    assert r.status_code == 200, r.text
    assert r.json()["value"] == "v1"
    before = len(proxy.requests)
    for field in ("vault_addr", "endpoint_url", "region"):
        r = client.put(URL, json={"value": "v2", field: decoy.address}, headers=h)
        assert r.status_code == 400, r.text
        assert field in r.json()["detail"]
    assert len(proxy.requests) == before
    assert decoy.requests == []
    # Every upstream request went to the configured prefix, signed for the configured region.
    if kind == "vault":
        assert all(
            path.startswith(("/v1/secret/data/k57/", "/v1/secret/metadata/k57/"))
            for _, path in proxy.requests
        )
        assert all("x-vault-namespace" not in hdrs for hdrs in proxy.headers)
    else:
        assert all("/us-east-1/secretsmanager/" in hdrs["authorization"] for hdrs in proxy.headers)


@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_redirect_to_another_host_is_not_followed(
    tmp_path: Path, kind: str, decoy: upstreams.FakeUpstream
) -> None:
    redirector = upstreams.FakeUpstream(
        lambda m, path, *a: (307, {"Location": decoy.address + path}, b"")
    ).start()
    try:
        if kind == "vault":
            token_file = write_private(tmp_path / "vault-token", "s.broker-token")
            entry = vault_backend(redirector.address, token_file, "k57")
        else:
            entry = aws_backend(redirector.address, "k57")
        client, rt, h = start_broker(tmp_path, backends_doc({kind: entry}, [env_mapping(kind)]))
        try:
            r = client.get(URL, headers=h)
            assert r.status_code == 503, r.text
            assert "redirect" in r.json()["detail"]
            r = client.put(URL, json={"value": "v"}, headers=h)
            assert r.status_code == 503, r.text
        finally:
            stop_broker(client, rt)
        assert len(redirector.requests) >= 1
        assert decoy.requests == []  # the token or signature never reached the other host
    finally:
        redirector.stop()


def test_paths_outside_the_prefix_are_refused_with_zero_upstream_calls(proxied: Any) -> None:
    kind, client, rt, h, proxy = proxied
    sources = (
        [
            "vault://secret/other-prefix/x",
            "vault://secret/k57/../other",
            "vault://othermount/k57/x",
            "vault://secret/k57x/y",
        ]
        if kind == "vault"
        else [
            "aws-sm://other-prefix/x",
            "aws-sm://k57/../other",
            "aws-sm://arn:aws:secretsmanager:us-east-1:999999999999:secret:k57/production/DB_URL-AbCdEf",
            f"aws-sm://arn:aws:secretsmanager:eu-west-1:{AWS_ACCOUNT}:secret:k57/production/DB_URL-AbCdEf",
            f"aws-sm://arn:aws:secretsmanager:us-east-1:{AWS_ACCOUNT}:secret:elsewhere/DB_URL-AbCdEf",
        ]
    )
    for source in sources:
        r = client.post(IMPORT, json={"source": source, "dry_run": True}, headers=h)
        assert r.status_code == 403, (source, r.text)
    backend = rt.backends.backends[kind]
    for rel in ("../escape", "production/../../x", "/abs", "production//x", "a/./b"):
        with pytest.raises(Forbidden):
            backend.read(rel)
        with pytest.raises(Forbidden):
            backend.write(rel, "v", cas=None)
    assert proxy.requests == []
    # The same source inside the prefix does reach the upstream (the counter works).
    ok = "vault://secret/k57/production" if kind == "vault" else "aws-sm://k57/production"
    r = client.post(IMPORT, json={"source": ok, "dry_run": True}, headers=h)
    assert r.status_code == 200, r.text
    assert proxy.requests != []


@pytest.mark.parametrize(
    "address",
    [
        "http://169.254.169.254",
        "http://169.254.169.254:80",
        "http://10.1.2.3:8200",
        "http://192.168.1.10:8200",
        "http://172.16.0.5:8200",
        "http://100.64.0.1:8200",
        "http://[fd00:ec2::254]",
        "http://[::ffff:169.254.169.254]",
        "http://0.0.0.0:8200",
        "http://127.0.0.1:8200",
        "http://localhost:8200",
    ],
)
@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_private_and_metadata_addresses_are_refused_before_connecting(
    tmp_path: Path, kind: str, address: str
) -> None:
    from broker.backends.router import build

    if kind == "vault":
        entry = vault_backend(address, write_private(tmp_path / "t", "tok"), "p", allow_networks=[])
    else:
        entry = aws_backend(address, "p", allow_networks=[])
    cfg = parse(json.dumps(backends_doc({kind: entry}, [env_mapping(kind)])), source="test")
    with pytest.raises(Forbidden, match="refused unless listed in allow_networks"):
        build(cfg)


def test_allow_list_admits_exactly_what_it_names() -> None:
    nets = guard.networks(["10.0.0.0/24"], field="allow_networks")
    guard.check_ip("10.0.0.7", nets, where="x")
    with pytest.raises(Forbidden):
        guard.check_ip("10.0.1.7", nets, where="x")
    with pytest.raises(Forbidden):
        guard.check_ip("169.254.169.254", nets, where="x")
    guard.check_ip("203.0.113.9", (), where="x") if False else None  # documentation range is not global
    guard.check_ip("8.8.8.8", (), where="x")


def test_every_new_connection_checks_the_address_it_reached(decoy: upstreams.FakeUpstream) -> None:
    """Defence against DNS rebinding: the connection itself refuses a non-allowed peer."""
    import urllib3

    pools = guard.guard_connections({"http": urllib3.HTTPConnectionPool}, (), "test upstream")
    pool = pools["http"]("127.0.0.1", decoy.port)
    with pytest.raises(Exception) as info:
        pool.urlopen("GET", "/", retries=False)
    assert "refused unless listed in allow_networks" in str(info.value) or isinstance(info.value, Forbidden)
    assert decoy.requests == []


def test_aws_region_cannot_name_another_host() -> None:
    doc = backends_doc(
        {"aws": aws_backend("http://127.0.0.1:1", "p", region="evil.example.com/")}, [env_mapping("aws")]
    )
    with pytest.raises(Invalid, match=r"backends\.aws\.region"):
        parse(json.dumps(doc), source="f")
