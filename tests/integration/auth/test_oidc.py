"""Catalogue 66: OIDC workload identity against a real issuer on loopback.

The issuer is a small HTTP server on 127.0.0.1 serving its JWKS (RS256 and ES256 keys, rotated on
demand); tokens are signed with its private keys by joserfc, as a CI platform would sign them. The broker
fetches the key set from the configured URL only, through the upstream guard (loopback is allow-listed
for the lab issuers and not for the `private` one). Each refusal is one audited event whose reason says
why, and no audit row holds the token's text. The preset issuers (github, gitlab) keep their real `iss`
and only their key set URL points at the lab issuer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from broker.errors import Invalid
from broker.main import build_runtime
from broker.oidc import config as oidc_config
from broker.oidc import from_file
from broker.services.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.auth.conftest import Broker, FakeMonotonic, World, bearer
from tests.support.oidc_issuer import LabIssuer
from tests.support.ports import free_port

GITHUB = "https://token.actions.githubusercontent.com"
GH_AUD = "https://strongroom.test"
GL_AUD = "strongroom"


@pytest.fixture
def lab() -> Iterator[LabIssuer]:
    issuer = LabIssuer()
    yield issuer
    issuer.stop()


def oidc_document(lab: LabIssuer) -> dict[str, Any]:
    here = ["127.0.0.1/32"]
    prod_read = [{"project": "alpha", "environments": "prod", "actions": ["read"]}]
    return {
        "format": "strongroom-oidc/1",
        "issuers": {
            "github": {"preset": "github", "jwks_url": lab.url, "audience": GH_AUD, "allow_networks": here},
            "gitlab": {"preset": "gitlab", "jwks_url": lab.url, "audience": GL_AUD, "allow_networks": here},
            "private": {"issuer": "https://idp.test", "jwks_url": lab.url, "audience": "x"},
            "down": {
                "issuer": "https://down.test",
                "jwks_url": f"http://127.0.0.1:{free_port()}/jwks",
                "audience": "x",
                "allow_networks": here,
                "timeout": 2,
            },
        },
        "roles": {
            "gh-prod": {
                "issuer": "github",
                "bound_claims": {
                    "repository": "acme/app",
                    "ref": "refs/heads/main",
                    "environment": "production",
                },
                "scopes": prod_read,
                "ttl": 600,
            },
            "gl-main": {
                "issuer": "gitlab",
                "bound_claims": {"project_path": "acme/*", "ref": ["main", "release-*"]},
                "bound_claims_type": "glob",
                "scopes": prod_read,
            },
            "private-role": {"issuer": "private", "bound_claims": {"sub": "x"}, "scopes": prod_read},
            "down-role": {"issuer": "down", "bound_claims": {"sub": "x"}, "scopes": prod_read},
        },
    }


@pytest.fixture
def oidc_file(tmp_path: Path, lab: LabIssuer) -> Path:
    path = tmp_path / "oidc.json"
    path.write_text(json.dumps(oidc_document(lab)))
    path.chmod(0o600)
    return path


@pytest.fixture
def runtime(runtime: Runtime, oidc_file: Path, mono: FakeMonotonic) -> Runtime:
    """The auth tests' runtime with the OIDC file loaded; the key set cache runs on the fake monotonic clock."""
    runtime.oidc = from_file(oidc_file)
    runtime.oidc.jwks.clock = mono
    return runtime


def _now(broker: Broker) -> int:
    return int(broker.clock().timestamp())


def github_claims(broker: Broker, **over: Any) -> dict[str, Any]:
    now = _now(broker)
    claims = {
        "iss": GITHUB,
        "aud": GH_AUD,
        "sub": "repo:acme/app:environment:production",
        "repository": "acme/app",
        "ref": "refs/heads/main",
        "environment": "production",
        "jti": base64.urlsafe_b64encode(os.urandom(12)).decode(),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict[str, Any], key: RSAKey | ECKey, *, alg: str = "RS256", kid: str | None = None) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid or key.kid}
    return jwt.encode(header, claims, key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def login(broker: Broker, role: str, token: str) -> httpx.Response:
    r: httpx.Response = broker.client.post("/v1/auth/oidc", json={"role": role, "jwt": token})
    return r


def assert_refused(broker: Broker, token: str, role: str, reason: str, status: int = 401) -> dict[str, Any]:
    r = login(broker, role, token)
    assert r.status_code == status, r.text
    assert "token" not in r.json()
    event = broker.audit_of(r)
    assert event["action"] == "auth.oidc"
    assert event["outcome"] == ("denied" if status == 401 else "error"), event
    assert reason in (event["reason"] or ""), event["reason"]
    assert token not in json.dumps(broker.audit_rows(), default=str)
    trail = json.dumps(broker.audit_rows(), default=str)
    assert all(part not in trail for part in token.split(".") if len(part) >= 16)
    return event


# --- good tokens


def test_a_github_token_yields_a_normal_short_lived_token_scoped_by_its_role(
    broker: Broker, world: World, lab: LabIssuer
) -> None:
    token = sign(github_claims(broker), lab.rsa)
    r = login(broker, "gh-prod", token)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token"].startswith("srt_") and body["accessor"].startswith("sra_")
    assert body["expires_in"] == 600
    assert body["principal"]["name"] == "oidc:github:repo:acme/app:environment:production"
    event = broker.audit_of(r)
    assert (event["action"], event["outcome"], event["actor_name"]) == (
        "auth.oidc",
        "ok",
        "oidc:github:repo:acme/app:environment:production",
    )
    assert event["reason"] == (
        "oidc role gh-prod; matched environment=production, ref=refs/heads/main, repository=acme/app"
    )
    assert token not in json.dumps(broker.audit_rows(), default=str)
    # Journey 3: production is readable, staging (common here) and the other tenant are not.
    prod = broker.client.get("/v1/projects/alpha/environments/prod/secrets", headers=bearer(body["token"]))
    assert prod.status_code == 200, prod.text
    read = broker.audit_of(prod)
    assert read["actor_name"] == "oidc:github:repo:acme/app:environment:production"
    broker.expect_denied(
        broker.client.get("/v1/projects/alpha/environments/common/secrets", headers=bearer(body["token"])),
        403,
    )
    broker.expect_denied(
        broker.client.get("/v1/projects/beta/environments/prod/secrets", headers=bearer(body["token"])), 403
    )
    # It is a token like any other: renewable within its max TTL, revocable by accessor.
    broker.clock.advance(601)
    broker.expect_denied(broker.whoami(body["token"]), 401)


def test_a_gitlab_token_signed_with_es256_matches_a_glob_role(broker: Broker, lab: LabIssuer) -> None:
    now = _now(broker)
    claims = {
        "iss": "https://gitlab.com",
        "aud": GL_AUD,
        "sub": "project_path:acme/shop:ref_type:branch:ref:release-7",
        "project_path": "acme/shop",
        "ref": "release-7",
        "exp": now + 300,
        "iat": now,
    }
    r = login(broker, "gl-main", sign(claims, lab.ec, alg="ES256"))
    assert r.status_code == 200, r.text
    assert broker.audit_of(r)["reason"] == "oidc role gl-main; matched project_path=acme/shop, ref=release-7"
    # Without a jti there is nothing to replay-check: the same token logs in again.
    assert login(broker, "gl-main", sign(claims, lab.ec, alg="ES256")).status_code == 200


def test_small_clock_skew_is_tolerated(broker: Broker, lab: LabIssuer) -> None:
    now = _now(broker)
    late = github_claims(broker, exp=now - 30)
    early = github_claims(broker, nbf=now + 30, iat=now + 30)
    assert login(broker, "gh-prod", sign(late, lab.rsa)).status_code == 200
    assert login(broker, "gh-prod", sign(early, lab.rsa)).status_code == 200


# --- refusals


def test_wrong_audience_issuer_and_times_are_refused(broker: Broker, lab: LabIssuer) -> None:
    now = _now(broker)
    cases = [
        (github_claims(broker, aud="https://someone-else.test"), "wrong audience"),
        (github_claims(broker, iss="https://token.actions.githubusercontent.com.evil"), "wrong issuer"),
        (github_claims(broker, exp=now - 61), "expired token"),
        (github_claims(broker, exp=None), "no exp claim"),
        (github_claims(broker, nbf=now + 600), "not yet valid"),
    ]
    for claims, reason in cases:
        assert_refused(broker, sign(claims, lab.rsa), "gh-prod", reason)


def test_alg_none_and_hs256_signed_with_the_public_key_are_refused(broker: Broker, lab: LabIssuer) -> None:
    claims = github_claims(broker)
    unsigned = (
        f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
    )
    assert_refused(broker, unsigned, "gh-prod", "algorithm 'none' is not allowed")
    # The classic confusion: HMAC keyed with the issuer's public key, which anyone can download.
    public_pem = lab.rsa.as_pem(private=False)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert_refused(broker, f"{head}.{payload}.{_b64(mac)}", "gh-prod", "algorithm 'HS256' is not allowed")


def test_tampered_claims_and_a_foreign_key_are_refused(broker: Broker, lab: LabIssuer) -> None:
    head, _, sig = sign(github_claims(broker, repository="acme/fork"), lab.rsa).split(".")
    forged = _b64(json.dumps(github_claims(broker)).encode())
    assert_refused(broker, f"{head}.{forged}.{sig}", "gh-prod", "bad signature")
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    assert_refused(broker, sign(github_claims(broker), impostor), "gh-prod", "bad signature")


def test_claims_outside_the_role_are_refused(broker: Broker, lab: LabIssuer) -> None:
    for over in ({"ref": "refs/heads/dev"}, {"repository": "acme/app2"}, {"environment": None}):
        event = assert_refused(
            broker, sign(github_claims(broker, **over), lab.rsa), "gh-prod", "do not match"
        )
        assert "refs/heads/dev" not in event["reason"] and "acme/app2" not in event["reason"]
    assert_refused(broker, sign(github_claims(broker), lab.rsa), "no-such-role", "unknown role")


def test_a_replayed_jti_is_refused(broker: Broker, lab: LabIssuer) -> None:
    token = sign(github_claims(broker), lab.rsa)
    assert login(broker, "gh-prod", token).status_code == 200
    assert_refused(broker, token, "gh-prod", "replayed jti")
    # The register forgets a jti only once its token has expired (plus leeway), when it is useless anyway.
    broker.clock.advance(300 + 60)
    assert_refused(broker, token, "gh-prod", "expired token")


def test_key_rotation_is_followed_and_unknown_key_ids_are_refused(
    broker: Broker, lab: LabIssuer, mono: FakeMonotonic
) -> None:
    assert login(broker, "gh-prod", sign(github_claims(broker), lab.rsa)).status_code == 200
    assert lab.fetches == 1
    assert login(broker, "gh-prod", sign(github_claims(broker), lab.rsa)).status_code == 200
    assert lab.fetches == 1  # cached
    # The issuer rotates: a new key is published and the old one withdrawn.
    new = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    lab.published = [new, lab.ec]
    assert login(broker, "gh-prod", sign(github_claims(broker), new)).status_code == 200
    assert lab.fetches == 2  # one forced refetch for the unknown kid
    # The withdrawn key is no longer trusted once the key set was refetched.
    assert_refused(broker, sign(github_claims(broker), lab.rsa), "gh-prod", "key id")
    # A made-up kid forces at most one refetch per interval.
    mono.advance(31)
    assert_refused(broker, sign(github_claims(broker), new, kid="made-up"), "gh-prod", "key id")
    assert_refused(broker, sign(github_claims(broker), new, kid="made-up-2"), "gh-prod", "key id")
    assert lab.fetches == 3


def test_unreachable_jwks_is_a_clear_503_and_no_token(broker: Broker, lab: LabIssuer) -> None:
    token = sign(github_claims(broker, iss="https://down.test", aud="x", sub="x"), lab.rsa)
    event = assert_refused(broker, token, "down-role", "cannot be fetched", status=503)
    assert "down" in event["reason"]


def test_jwks_at_a_private_address_is_refused_by_the_guard(broker: Broker, lab: LabIssuer) -> None:
    token = sign(github_claims(broker, iss="https://idp.test", aud="x", sub="x"), lab.rsa)
    r = login(broker, "private-role", token)
    assert r.status_code == 503
    assert "private, loopback" in r.json()["detail"]
    assert lab.fetches == 0  # refused before any connection
    assert_refused(broker, token, "private-role", "private, loopback", status=503)


def test_an_admin_can_disable_an_oidc_subject(broker: Broker, lab: LabIssuer) -> None:
    body = login(broker, "gh-prod", sign(github_claims(broker), lab.rsa)).json()
    listed = broker.client.get("/v1/identities", headers=broker.admin.headers).json()["identities"]
    [client_id] = [
        i["client_id"] for i in listed if i["name"] == "oidc:github:repo:acme/app:environment:production"
    ]
    assert client_id.startswith("oidc-github-")
    r = broker.client.post(f"/v1/identities/{client_id}/disable", headers=broker.admin.headers)
    assert r.status_code == 200, r.text
    broker.expect_denied(broker.whoami(body["token"]), 401)
    assert_refused(broker, sign(github_claims(broker), lab.rsa), "gh-prod", "principal disabled")
    assert (
        broker.client.post(f"/v1/identities/{client_id}/enable", headers=broker.admin.headers).status_code
        == 200
    )
    assert login(broker, "gh-prod", sign(github_claims(broker), lab.rsa)).status_code == 200


def test_nothing_is_issued_by_a_refusal(broker: Broker, lab: LabIssuer) -> None:
    before = [r for r in broker.dump()["tokens"]]
    assert_refused(
        broker, sign(github_claims(broker, ref="refs/heads/dev"), lab.rsa), "gh-prod", "do not match"
    )
    assert broker.dump()["tokens"] == before


# --- configuration


def test_the_file_is_read_from_settings_and_must_be_private(tmp_path: Path, oidc_file: Path) -> None:
    rt = build_runtime(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path, oidc_file=oidc_file)
    )
    assert rt.oidc is not None and set(rt.oidc.config.roles) == {
        "gh-prod",
        "gl-main",
        "private-role",
        "down-role",
    }
    oidc_file.chmod(0o644)
    with pytest.raises(Invalid, match="chmod 600"):
        build_runtime(
            make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path, oidc_file=oidc_file)
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["issuers"]["github"].update(algorithms=["HS256"]), "issuers.github.algorithms"),
        (lambda d: d["issuers"]["github"].update(algorithms=["none"]), "is not allowed"),
        (lambda d: d["issuers"]["github"].update(surprise=1), "issuers.github.surprise"),
        (lambda d: d["roles"]["gh-prod"].update(bound_claims={"ref": "refs/heads/main"}), "must bind one of"),
        (lambda d: d["roles"]["gh-prod"].update(issuer="nobody"), "no issuer named"),
        (lambda d: d["roles"]["gh-prod"].update(ttl=99999), "roles.gh-prod.ttl"),
        (lambda d: d["issuers"]["private"].pop("jwks_url"), "give a preset"),
        (
            lambda d: d["issuers"]["github"].update(allow_networks=["10.0.0.0/33"]),
            "issuers.github.allow_networks",
        ),
        (lambda d: d["issuers"]["github"].update(allow_networks=["x"]), "'x' is not an IP network"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(lab: LabIssuer, change: Any, message: str) -> None:
    doc = oidc_document(lab)
    change(doc)
    with pytest.raises(Invalid, match=message.replace(".", r"\.")):
        oidc_config.parse(json.dumps(doc), source="oidc.json")


def test_login_without_an_oidc_file_is_404(broker: Broker) -> None:
    broker.rt.oidc = None
    r = login(broker, "gh-prod", "a.b.c")
    assert r.status_code == 404
    assert "STRONGROOM_OIDC_FILE" in r.json()["detail"]
