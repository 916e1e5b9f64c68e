"""Remote key-encryption keys (A1, A6, A8): AWS KMS (moto) and Vault transit (OpenBao) behind the Kek protocol.

A keyring mixes local, KMS and transit keys; `keys rotate` / `keys rewrap` move data keys across kinds
without touching value ciphertext; KMS and transit bind each wrapped key to its row (encryption context,
derivation context); an unreachable key source is a 503, never a plaintext fallback.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.backends.kek_aws import AwsKmsKek, context
from broker.backends.kek_vault import VaultTransitKek
from broker.config import Settings
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Keyring
from broker.db import migrate
from broker.errors import IntegrityError
from broker.keys import new_document, parse_document, retire_from_file, rotate_file
from broker.main import build_runtime, create_app
from broker.models import secret_versions
from broker.services.keys import rewrap
from broker.services.runtime import Runtime, utcnow
from tests.integration.backends.conftest import REGION, write_private
from tests.support import upstreams
from tests.support.ports import closed_port

BASE = "/v1/projects/microblog/environments/production/secrets"


def kms_entry(moto: upstreams.Moto, key_id: str, endpoint: str | None = None) -> dict[str, Any]:
    return {
        "type": "aws-kms",
        "key_id": key_id,
        "region": REGION,
        "endpoint_url": endpoint or moto.endpoint,
        "credentials": {"access_key_id": "testing", "secret_access_key": "testing"},
        "allow_networks": ["127.0.0.0/8"],
        "max_attempts": 1,
    }


def transit_entry(bao: upstreams.Bao, token_file: Path, key: str) -> dict[str, Any]:
    return {
        "type": "vault-transit",
        "address": bao.address,
        "key": key,
        "auth": {"method": "token", "token_file": str(token_file)},
        "allow_networks": ["127.0.0.0/8"],
    }


@pytest.fixture
def kms_key(moto: upstreams.Moto) -> str:
    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=moto.endpoint,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    return str(kms.create_key(Description="strongroom test")["KeyMetadata"]["KeyId"])


@pytest.fixture
def transit_key(bao: upstreams.Bao) -> str:
    import secrets

    name = f"sr-{secrets.token_hex(4)}"
    bao.api("POST", f"transit/keys/{name}", {"derived": True})
    return name


class Broker:
    """A broker on one SQLite file whose keyring file changes between phases (like restarted replicas)."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
        migrate.upgrade(self.url)
        self.key_file = write_private(
            tmp_path / "keyring.json", json.dumps(new_document(utcnow(), dev=False))
        )
        self.data_dir = tmp_path / "data"
        self.h: dict[str, str] = {}

    def settings(self, **extra: Any) -> Settings:
        return Settings(database_url=self.url, data_dir=self.data_dir, key_file=self.key_file, **extra)

    def run(self, fn: Any, **extra: Any) -> Any:
        """Run fn(client, rt) against a fresh runtime built from the keyring file as it is now."""
        rt = build_runtime(self.settings(**extra))
        with TestClient(create_app(rt), client=("127.0.0.1", 50000)) as client:
            if not self.h:
                from broker.services.auth import bootstrap_admin

                created = client.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
                r = client.post(
                    "/v1/auth/token",
                    json={"client_id": "admin", "client_secret": created.client_secret, "ttl": 3600},
                )
                self.h = {"Authorization": f"Bearer {r.json()['token']}"}
                assert (
                    client.post("/v1/projects", json={"slug": "microblog"}, headers=self.h).status_code == 201
                )
                r = client.post(
                    "/v1/projects/microblog/environments", json={"slug": "production"}, headers=self.h
                )
                assert r.status_code == 201
            return fn(client, rt)


def rows(client: TestClient, rt: Runtime) -> dict[int, tuple[bytes, bytes, str]]:
    async def go() -> dict[int, tuple[bytes, bytes, str]]:
        async with rt.engine.begin() as conn:
            res = await conn.execute(
                select(
                    secret_versions.c.id,
                    secret_versions.c.ciphertext,
                    secret_versions.c.wrapped_dek,
                    secret_versions.c.kek_id,
                )
            )
            return {r[0]: (r[1], r[2], r[3]) for r in res}

    return client.portal.call(go)  # type: ignore[union-attr]


def test_keyring_mixes_local_kms_and_transit_and_rewraps_across_kinds(
    tmp_path: Path, moto: upstreams.Moto, bao: upstreams.Bao, kms_key: str, transit_key: str
) -> None:
    b = Broker(tmp_path)
    token_file = write_private(tmp_path / "bao-token", bao.token)
    values = {"LOCAL_ONE": "a" * 40, "KMS_ONE": "b" * 40, "TRANSIT_ONE": "c" * 40}

    def put(name: str) -> Any:
        def go(client: TestClient, rt: Runtime) -> None:
            assert client.put(f"{BASE}/{name}", json={"value": values[name]}, headers=b.h).status_code == 200

        return go

    def read_all(client: TestClient, rt: Runtime) -> dict[str, str]:
        one_by_one = {n: client.get(f"{BASE}/{n}", headers=b.h).json().get("value") for n in values}
        # The whole environment in one request: local values open inline, remote ones in a worker thread.
        r = client.get(BASE.removesuffix("/secrets") + "/resolved", headers=b.h)
        assert r.status_code == 200, r.text
        assert {n: v["value"] for n, v in r.json()["values"].items()} == one_by_one
        return one_by_one

    local_id = json.loads(b.key_file.read_text())["current"]
    b.run(put("LOCAL_ONE"))
    kms_id = rotate_file(b.key_file, now=utcnow(), entry=kms_entry(moto, kms_key))
    b.run(put("KMS_ONE"))
    transit_id = rotate_file(b.key_file, now=utcnow(), entry=transit_entry(bao, token_file, transit_key))
    b.run(put("TRANSIT_ONE"))
    assert b.run(read_all) == values

    before = b.run(rows)
    assert sorted(k for _, _, k in before.values()) == sorted([local_id, kms_id, transit_id])
    kms_row = next(v for v in before.values() if v[2] == kms_id)
    transit_row = next(v for v in before.values() if v[2] == transit_id)
    assert transit_row[1][1:].startswith(b"vault:v1:")
    # The KMS blob opens only with its row's encryption context (moto enforces it).
    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=moto.endpoint,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    with pytest.raises(Exception, match="InvalidCiphertext"):
        kms.decrypt(CiphertextBlob=kms_row[1][1:], EncryptionContext={"strongroom-aad": "b3RoZXI="})

    report = b.run(lambda client, rt: client.portal.call(rewrap, rt))  # type: ignore[union-attr]
    assert report.rewrapped == 2 and report.current == transit_id
    after = b.run(rows)
    assert {k for _, _, k in after.values()} == {transit_id}
    assert {i: ct for i, (ct, _, _) in after.items()} == {i: ct for i, (ct, _, _) in before.items()}
    for kid in (local_id, kms_id):
        retire_from_file(b.key_file, kid)
    assert b.run(read_all) == values
    # And back from transit to a local key.
    rotate_file(b.key_file, now=utcnow())
    b.run(lambda client, rt: client.portal.call(rewrap, rt))  # type: ignore[union-attr]
    retire_from_file(b.key_file, transit_id)
    assert b.run(read_all) == values


def test_kms_outage_is_503_and_never_plaintext(tmp_path: Path, moto: upstreams.Moto, kms_key: str) -> None:
    b = Broker(tmp_path)
    rotate_file(b.key_file, now=utcnow(), entry=kms_entry(moto, kms_key))
    b.run(lambda client, rt: client.put(f"{BASE}/DB_URL", json={"value": "secret-value-1234"}, headers=b.h))
    doc = json.loads(b.key_file.read_text())

    def read(client: TestClient, rt: Runtime) -> Any:
        return client.get(f"{BASE}/DB_URL", headers=b.h)

    with closed_port() as port:
        doc["keys"][doc["current"]]["endpoint_url"] = f"http://127.0.0.1:{port}"
        b.key_file.write_text(json.dumps(doc))
        r = b.run(read)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert "secret-value" not in r.text
        r = b.run(lambda client, rt: client.put(f"{BASE}/OTHER", json={"value": "x"}, headers=b.h))
        assert r.status_code == 503, r.text


def test_kms_kek_binds_the_row_and_moto_enforces_context(moto: upstreams.Moto, kms_key: str) -> None:
    kek = AwsKmsKek(
        "kms-1",
        kms_key_id=kms_key,
        region=REGION,
        endpoint_url=moto.endpoint,
        allow_networks=((__import__("ipaddress").ip_network("127.0.0.0/8")),),
        static=("t", "t", None),
    )
    ring = Keyring([kek], current="kms-1")
    aad = secret_aad(project_id=1, environment_id=2, name="N", version=1)
    sealed = ring.seal(b"value", aad)
    assert ring.open(sealed, aad) == b"value"
    with pytest.raises(IntegrityError):
        ring.open(sealed, secret_aad(project_id=1, environment_id=2, name="N", version=2))
    assert context(b"\x00\xff") == {"strongroom-aad": base64.urlsafe_b64encode(b"\x00\xff").decode()}
    assert "***" not in repr(kek) and "testing" not in repr(kek)


def test_transit_rewrap_moves_to_the_newest_key_version(bao: upstreams.Bao, transit_key: str) -> None:
    import ipaddress

    kek = VaultTransitKek(
        "tr-1",
        address=bao.address,
        key=transit_key,
        token=bao.token,
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    aad = b"row-aad"
    dek, wrapped = kek.generate(aad)
    assert len(dek) == 32 and wrapped.startswith(b"vault:v1:")
    assert kek.unwrap(wrapped, aad) == dek
    with pytest.raises(IntegrityError):
        kek.unwrap(wrapped, b"another-row")
    bao.api("POST", f"transit/keys/{transit_key}/rotate", {})
    newer = kek.rewrap(wrapped, aad)
    assert newer.startswith(b"vault:v2:")
    assert kek.unwrap(newer, aad) == dek
    assert kek.unwrap(kek.wrap(dek, aad), aad) == dek


def test_typed_keyring_entries_are_validated_with_their_path(tmp_path: Path) -> None:
    from broker.errors import Invalid

    base = new_document(utcnow(), dev=False)
    doc = dict(
        base,
        keys={
            **base["keys"],
            "k-remote": {"type": "aws-kms", "key_id": "x", "region": "us-east-1", "colour": "red"},
        },
    )
    with pytest.raises(Invalid, match=r"keys\.k-remote\.colour"):
        parse_document(json.dumps(doc), source="keyring.json")
    doc = dict(
        base,
        keys={
            **base["keys"],
            "k-remote": {
                "type": "aws-kms",
                "key_id": "x",
                "region": "us-east-1",
                "endpoint_url": "http://169.254.169.254",
            },
        },
    )
    with pytest.raises(Exception, match="refused unless listed in allow_networks"):
        parse_document(json.dumps(doc), source="keyring.json")
    doc = dict(
        base,
        keys={**base["keys"], "k-remote": {"type": "aws-kms", "key_id": "x", "region": "eu-west-1.evil"}},
    )
    with pytest.raises(Invalid, match=r"keys\.k-remote\.region: .*must be an AWS region name"):
        parse_document(json.dumps(doc), source="keyring.json")
    entry = {"type": "aws-kms", "key_id": "x", "region": "us-east-1", "allow_networks": ["x"]}
    doc = dict(base, keys={**base["keys"], "k-remote": entry})
    with pytest.raises(
        Invalid, match=r"^keyring\.json: keys\.k-remote\.allow_networks: 'x' is not an IP network$"
    ):
        parse_document(json.dumps(doc), source="keyring.json")
    # The old local format stays valid, and so does the typed local form.
    kid = base["current"]
    doc = dict(base, keys={kid: {"type": "local", "key": base["keys"][kid]}})
    assert parse_document(json.dumps(doc), source="k").keyring.current_id == kid
    assert parse_document(json.dumps(base), source="k").remote == frozenset()


def test_remote_kek_calls_stay_off_the_event_loop(tmp_path: Path, moto: upstreams.Moto, kms_key: str) -> None:
    """ARCHITECTURE rule 7: a KMS call from a request runs in a worker thread."""
    import threading

    b = Broker(tmp_path)
    rotate_file(b.key_file, now=utcnow(), entry=kms_entry(moto, kms_key))
    threads: list[str] = []
    original = AwsKmsKek.generate

    def spy(self: AwsKmsKek, aad: bytes) -> tuple[bytes, bytes]:
        threads.append(threading.current_thread().name)
        return original(self, aad)

    AwsKmsKek.generate = spy  # type: ignore[method-assign]
    try:

        def go(client: TestClient, rt: Runtime) -> None:
            loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
            assert client.put(f"{BASE}/X", json={"value": "v"}, headers=b.h).status_code == 200
            assert threads and loop_thread not in threads

        b.run(go)
    finally:
        AwsKmsKek.generate = original  # type: ignore[method-assign]


def test_a_whole_environment_opens_remote_keks_off_the_event_loop(
    tmp_path: Path, moto: upstreams.Moto, kms_key: str
) -> None:
    """ARCHITECTURE rule 7 for GET .../resolved: every KMS unwrap of the request runs in a worker thread."""
    import threading

    b = Broker(tmp_path)
    rotate_file(b.key_file, now=utcnow(), entry=kms_entry(moto, kms_key))
    values = {f"K{i}": f"value-{i}-" + "x" * 20 for i in range(3)}
    threads: list[str] = []
    original = AwsKmsKek.unwrap

    def spy(self: AwsKmsKek, wrapped: bytes, aad: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return original(self, wrapped, aad)

    def go(client: TestClient, rt: Runtime) -> None:
        for name, value in values.items():
            assert client.put(f"{BASE}/{name}", json={"value": value}, headers=b.h).status_code == 200
        loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
        AwsKmsKek.unwrap = spy  # type: ignore[method-assign]
        try:
            r = client.get(BASE.removesuffix("/secrets") + "/resolved", headers=b.h)
        finally:
            AwsKmsKek.unwrap = original  # type: ignore[method-assign]
        assert r.status_code == 200, r.text
        assert {n: v["value"] for n, v in r.json()["values"].items()} == values
        assert len(threads) == len(values) and loop_thread not in threads

    b.run(go)


def test_keys_rewrap_upstream_versions_uses_transit_rewrap(
    tmp_path: Path, bao: upstreams.Bao, transit_key: str
) -> None:
    from broker.services.keys import refresh_upstream

    b = Broker(tmp_path)
    token_file = write_private(tmp_path / "bao-token", bao.token)
    rotate_file(b.key_file, now=utcnow(), entry=transit_entry(bao, token_file, transit_key))
    b.run(lambda client, rt: client.put(f"{BASE}/DB_URL", json={"value": "transit-protected"}, headers=b.h))
    before = b.run(rows)
    assert all(w[1:].startswith(b"vault:v1:") for _, w, _ in before.values())
    bao.api("POST", f"transit/keys/{transit_key}/rotate", {})
    report = b.run(lambda client, rt: client.portal.call(refresh_upstream, rt))  # type: ignore[union-attr]
    assert report.rewrapped == len(before)
    after = b.run(rows)
    assert all(w[1:].startswith(b"vault:v2:") for _, w, _ in after.values())
    assert {i: (ct, k) for i, (ct, _, k) in after.items()} == {i: (ct, k) for i, (ct, _, k) in before.items()}
    # Old transit key versions can now be refused for decryption; every value still reads.
    bao.api("POST", f"transit/keys/{transit_key}/config", {"min_decryption_version": 2})
    r = b.run(lambda client, rt: client.get(f"{BASE}/DB_URL", headers=b.h))
    assert r.json()["value"] == "transit-protected"
    again = b.run(lambda client, rt: client.portal.call(refresh_upstream, rt))  # type: ignore[union-attr]
    assert again.rewrapped == 0
