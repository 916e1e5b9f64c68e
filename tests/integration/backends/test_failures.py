"""Upstream failures (A8): down, slow, throttled, malformed, token expired. The broker answers with a clear
error (503 with Retry-After, or 403/404), never a value, and never a cached value past its TTL.

Real servers where a real server can be made to fail (nothing listening; an OpenBao token that
expires); a FakeUpstream (a tiny loopback HTTP server, see tests/support/upstreams.py) for slow,
throttled and malformed answers, which no real server gives on demand.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.backends.conftest import (
    aws_backend,
    backends_doc,
    env_mapping,
    start_broker,
    stop_broker,
    vault_backend,
    write_private,
)
from tests.support import upstreams
from tests.support.ports import closed_port

SECRET = "do-not-leak-" + "7" * 16


def kv_answer(value: str, version: int = 1) -> bytes:
    return json.dumps(
        {
            "data": {
                "data": {"value": value},
                "metadata": {
                    "version": version,
                    "created_time": "2026-01-01T00:00:00Z",
                    "deletion_time": "",
                    "destroyed": False,
                },
            }
        }
    ).encode()


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[..., upstreams.Answer]], upstreams.FakeUpstream]]:
    started: list[upstreams.FakeUpstream] = []

    def make(respond: Callable[..., upstreams.Answer]) -> upstreams.FakeUpstream:
        f = upstreams.FakeUpstream(respond).start()
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


def broker_on(tmp_path: Path, kind: str, address: str, **extra: Any) -> tuple[Any, Any, dict[str, str]]:
    cache_ttl = extra.pop("cache_ttl", 0)
    if kind == "vault":
        token_file = write_private(tmp_path / "vault-token", "s.test-token")
        entry = vault_backend(address, token_file, "sr", **extra)
    else:
        entry = aws_backend(address, "sr", **extra)
    return start_broker(tmp_path, backends_doc({kind: entry}, [env_mapping(kind)], cache_ttl=cache_ttl))


def assert_unavailable(r: Any, words: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.json()["detail"], r.json()["detail"]
    assert SECRET not in r.text


@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_upstream_down_is_503(tmp_path: Path, kind: str) -> None:
    with closed_port() as port:
        client, rt, h = broker_on(tmp_path, kind, f"http://127.0.0.1:{port}")
        try:
            r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
            assert_unavailable(r, "connect")
            r = client.put(
                "/v1/projects/microblog/environments/production/secrets/DB_URL",
                json={"value": SECRET},
                headers=h,
            )
            assert_unavailable(r, "connect")
            r = client.get("/v1/projects/microblog/environments/production/resolved", headers=h)
            assert_unavailable(r, "connect")
        finally:
            stop_broker(client, rt)


@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_slow_upstream_times_out(tmp_path: Path, kind: str, fake: Any) -> None:
    # The upstream answers only once the test has its response (or after a minute, which fails the test
    # with a 200): the broker must give up on its own timeout, however long the machine takes to get there.
    answered = threading.Event()

    def slow(method: str, path: str, headers: dict[str, str], body: bytes) -> upstreams.Answer:
        answered.wait(60)
        return 200, {"Content-Type": "application/json"}, kv_answer(SECRET)

    f = fake(slow)
    client, rt, h = broker_on(tmp_path, kind, f.address, timeout=0.3)
    try:
        r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
        assert_unavailable(r, "in time")
    finally:
        answered.set()
        stop_broker(client, rt)


def test_vault_throttling_is_503_with_its_retry_after(tmp_path: Path, fake: Any) -> None:
    f = fake(
        lambda *a: (
            429,
            {"Content-Type": "application/json", "Retry-After": "7"},
            b'{"errors":["rate limited"]}',
        )
    )
    client, rt, h = broker_on(tmp_path, "vault", f.address)
    try:
        r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
        assert_unavailable(r, "throttling")
        assert r.headers["retry-after"] == "7"
    finally:
        stop_broker(client, rt)


def test_aws_throttling_is_503(tmp_path: Path, fake: Any) -> None:
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    f = fake(lambda *a: (400, {"Content-Type": "application/x-amz-json-1.1"}, body))
    client, rt, h = broker_on(tmp_path, "aws", f.address)
    try:
        r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
        assert_unavailable(r, "throttling")
        assert len(f.requests) == 1  # max_attempts = 1: no retry storm
    finally:
        stop_broker(client, rt)


@pytest.mark.parametrize("kind", ["vault", "aws"])
@pytest.mark.parametrize(
    "payload", [b'{"data": {"data": {"value": "do-not-leak', b"<html>oops</html>", b"[]", b'{"data": 3}']
)
def test_malformed_answer_is_503(tmp_path: Path, kind: str, payload: bytes, fake: Any) -> None:
    ctype = "application/json" if kind == "vault" else "application/x-amz-json-1.1"
    f = fake(lambda *a: (200, {"Content-Type": ctype}, payload))
    client, rt, h = broker_on(tmp_path, kind, f.address)
    try:
        r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
        assert_unavailable(r, "malformed")
        assert "do-not-leak" not in r.text
    finally:
        stop_broker(client, rt)


def test_expired_vault_token_is_a_clear_403(tmp_path: Path, bao: upstreams.Bao) -> None:
    """To Vault's API an expired token and a revoked one are the same thing (a token that no longer
    exists: 403, permission denied): the token is revoked, so it ends when the test says, not when a
    clock on a loaded machine says (a 2 s TTL ran out before the first read under load)."""
    bao.api(
        "PUT",
        "sys/policies/acl/sr-kv",
        {"policy": 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'},
    )
    short = bao.api(
        "POST", "auth/token/create", {"ttl": "1h", "policies": ["sr-kv"], "no_default_policy": True}
    )["auth"]["client_token"]
    bao.api("POST", "secret/data/sr-exp/production/DB_URL", {"data": {"value": SECRET}})
    token_file = write_private(tmp_path / "vault-token", short)
    doc = backends_doc({"vault": vault_backend(bao.address, token_file, "sr-exp")}, [env_mapping("vault")])
    client, rt, h = start_broker(tmp_path, doc)
    try:
        url = "/v1/projects/microblog/environments/production/secrets/DB_URL"
        assert client.get(url, headers=h).json()["value"] == SECRET
        bao.api("POST", "auth/token/revoke", {"token": short})
        r = client.get(url, headers=h)
        assert r.status_code == 403, r.text
        assert "token expired" in r.json()["detail"]
        assert SECRET not in r.text
    finally:
        stop_broker(client, rt)


def _approle_tokens(bao: upstreams.Bao) -> int:
    """How many live tokens an AppRole login made."""
    accessors = bao.api("LIST", "auth/token/accessors")["data"]["keys"]
    paths = [
        bao.api("POST", "auth/token/lookup-accessor", {"accessor": a})["data"]["path"] for a in accessors
    ]
    return sum(path == "auth/approle/login" for path in paths)


def test_approle_logs_in_again_when_its_token_expires(tmp_path: Path, bao: upstreams.Bao) -> None:
    """The broker's AppRole token is ended by revoking every token its login made (what its expiry
    looks like to the broker: 403 on the next call), not by waiting out a TTL on the clock."""
    bao.api(
        "PUT",
        "sys/policies/acl/sr-kv",
        {"policy": 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'},
    )
    with contextlib.suppress(RuntimeError):  # already enabled by an earlier test
        bao.api("POST", "sys/auth/approle", {"type": "approle"})
    bao.api(
        "POST",
        "auth/approle/role/sr",
        {"token_ttl": "1h", "token_max_ttl": "1h", "token_policies": ["sr-kv"]},
    )
    role_id = bao.api("GET", "auth/approle/role/sr/role-id")["data"]["role_id"]
    secret_id = bao.api("POST", "auth/approle/role/sr/secret-id", {})["data"]["secret_id"]
    write_private(tmp_path / "secret-id", secret_id)
    bao.api("POST", "secret/data/sr-approle/production/DB_URL", {"data": {"value": SECRET}})
    entry = vault_backend(bao.address, tmp_path / "unused", "sr-approle")
    entry["auth"] = {"method": "approle", "role_id": role_id, "secret_id_file": str(tmp_path / "secret-id")}
    client, rt, h = start_broker(tmp_path, backends_doc({"vault": entry}, [env_mapping("vault")]))
    try:
        url = "/v1/projects/microblog/environments/production/secrets/DB_URL"
        assert client.get(url, headers=h).json()["value"] == SECRET
        assert _approle_tokens(bao) == 1
        bao.api("PUT", "sys/leases/revoke-prefix/auth/approle/login", {})
        assert _approle_tokens(bao) == 0
        r = client.get(url, headers=h)
        assert r.status_code == 200, r.text
        assert _approle_tokens(bao) == 1  # the broker logged in again
        assert r.json()["value"] == SECRET
    finally:
        stop_broker(client, rt)


def test_expired_aws_credentials_are_a_clear_403(tmp_path: Path, fake: Any) -> None:
    body = json.dumps(
        {
            "__type": "ExpiredTokenException",
            "message": "The security token included in the request is expired",
        }
    ).encode()
    f = fake(lambda *a: (400, {"Content-Type": "application/x-amz-json-1.1"}, body))
    client, rt, h = broker_on(tmp_path, "aws", f.address)
    try:
        r = client.get("/v1/projects/microblog/environments/production/secrets/DB_URL", headers=h)
        assert r.status_code == 403, r.text
        assert "expired" in r.json()["detail"]
    finally:
        stop_broker(client, rt)


def test_cache_serves_within_ttl_and_never_past_it(tmp_path: Path, fake: Any) -> None:
    state = {"mode": "ok", "value": SECRET}

    def respond(method: str, path: str, headers: dict[str, str], body: bytes) -> upstreams.Answer:
        if state["mode"] == "down":
            return 503, {"Content-Type": "application/json"}, b'{"errors":["sealed"]}'
        return 200, {"Content-Type": "application/json"}, kv_answer(state["value"])

    f = fake(respond)
    client, rt, h = broker_on(tmp_path, "vault", f.address, cache_ttl=30)
    now = [1000.0]
    assert rt.backends is not None
    rt.backends.cache.clock = lambda: now[0]
    url = "/v1/projects/microblog/environments/production/secrets/DB_URL"
    try:
        assert client.get(url, headers=h).json()["value"] == SECRET
        calls = len(f.requests)
        state["mode"] = "down"
        now[0] += 29.9
        assert client.get(url, headers=h).json()["value"] == SECRET  # within the TTL: from memory
        assert len(f.requests) == calls
        now[0] += 0.2
        r = client.get(url, headers=h)  # past the TTL with the upstream down: an error, not the old value
        assert_unavailable(r, "503")
        state.update(mode="ok", value="fresh-value")
        assert client.get(url, headers=h).json()["value"] == "fresh-value"
        # A write through the broker drops the cached entry at once.
        assert client.put(url, json={"value": "written"}, headers=h).status_code in (200, 503)
        state["value"] = "after-write"
        assert client.get(url, headers=h).json()["value"] == "after-write"
    finally:
        stop_broker(client, rt)
