"""C16: every authentication failure looks the same; oversized credentials are refused before hashing."""

from __future__ import annotations

import ast
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

import broker as broker_pkg
from broker.services import auth
from tests.integration.auth.conftest import Broker, bearer, scope


def _random_token() -> str:
    return "srt_" + secrets.token_urlsafe(32)


def _flip(token: str) -> str:
    """The same token with its last character changed (a wrong, still well-formed token)."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def _shape(r: httpx.Response) -> tuple[int, dict[str, Any], str | None, str]:
    body = r.json()
    assert isinstance(body.pop("request_id"), str)
    return r.status_code, body, r.headers.get("www-authenticate"), r.headers["content-type"]


def _failing_bearer_requests(broker: Broker) -> dict[str, httpx.Response]:
    """One request per way a bearer token can be bad, all against the same route."""
    c = broker.client
    b = broker
    expiring = b.child_token(b.admin.token, ttl=5)["token"]
    revoked = b.child_token(b.admin.token)["token"]
    assert c.post("/v1/auth/token/revoke-self", headers=bearer(revoked)).status_code == 204
    spent = b.child_token(b.admin.token, num_uses=1)["token"]
    assert b.whoami(spent).status_code == 200
    disabled = b.login([scope("*", ["read"])], name="gone")
    assert c.delete(f"/v1/identities/{disabled.client_id}", headers=b.admin.headers).status_code == 204
    cidr_bound = b.child_token(b.admin.token, bound_cidrs=["10.0.0.0/8"])["token"]
    b.clock.advance(5)  # `expiring` is now exactly at its TTL; the admin token has 895 s left
    route = "/v1/auth/token/self"
    cases: dict[str, dict[str, str]] = {
        "missing": {},
        "empty": {"Authorization": ""},
        "unknown": bearer(_random_token()),
        "wrong": bearer(_flip(b.admin.token)),
        "expired": bearer(expiring),
        "revoked": bearer(revoked),
        "uses exhausted": bearer(spent),
        "principal disabled": bearer(disabled.token),
        "outside bound cidrs": bearer(cidr_bound),
        "accessor as token": bearer(b.admin.accessor),
        "malformed: no prefix": bearer(secrets.token_urlsafe(32)),
        "malformed: short": bearer(b.admin.token[:-1]),
        "malformed: long": bearer(b.admin.token + "A"),
        "malformed: bad chars": bearer(b.admin.token[:-2] + "+/"),
        "malformed: scheme": {"Authorization": f"Basic {b.admin.token}"},
        "malformed: no scheme": {"Authorization": b.admin.token},
        "malformed: two tokens": {"Authorization": f"Bearer {b.admin.token} {b.admin.token}"},
        "malformed: 8 KiB exactly": {"Authorization": "Bearer " + "x" * (8192 - 7)},
    }
    return {name: c.get(route, headers=h) for name, h in cases.items()}


def test_every_bad_token_gets_the_same_401(broker: Broker) -> None:
    responses = _failing_bearer_requests(broker)
    shapes = {name: _shape(r) for name, r in responses.items()}
    reference = shapes["unknown"]
    assert reference[0] == 401
    assert reference[2] == "Bearer"
    assert reference[3] == "application/problem+json"
    for name, shape in shapes.items():
        assert shape == reference, f"{name} differs from an unknown token: {shape} != {reference}"
    for r in responses.values():
        broker.expect_denied(r, 401)
    # The audit trail tells the causes apart even though the client cannot.
    reasons = {name: broker.audit_of(r)["reason"] for name, r in responses.items()}
    assert reasons["expired"] == "expired token"
    assert reasons["revoked"] == "revoked token"
    assert reasons["unknown"] == reasons["wrong"] == "unknown token"
    # The admin token itself still works: nothing above hurt it.
    assert broker.whoami(broker.admin.token).status_code == 200


def test_every_bad_client_credential_gets_the_same_401(broker: Broker) -> None:
    b = broker
    disabled = b.identity([scope("*", ["read"])], name="gone")
    assert (
        b.client.delete(f"/v1/identities/{disabled['client_id']}", headers=b.admin.headers).status_code == 204
    )
    bound = b.identity([scope("*", ["read"])], name="bound", bound_cidrs=["10.0.0.0/8"])
    cases = {
        "unknown client": b.exchange("sri_" + secrets.token_hex(12), "srs_" + secrets.token_urlsafe(32)),
        "wrong secret": b.exchange("admin", _flip(b.admin.client_secret)),
        "other's secret": b.exchange("admin", bound["client_secret"]),
        "disabled": b.exchange(disabled["client_id"], disabled["client_secret"]),
        "outside bound cidrs": b.exchange(bound["client_id"], bound["client_secret"]),
        "case variant": b.exchange("ADMIN", b.admin.client_secret),
    }
    shapes = {name: _shape(r) for name, r in cases.items()}
    reference = shapes["unknown client"]
    assert reference[0] == 401
    for name, shape in shapes.items():
        assert shape == reference, f"{name}: {shape} != {reference}"
    # ...and it is the same body as a bad bearer token.
    bad_bearer = _shape(b.whoami(_random_token()))
    assert reference[:2] == bad_bearer[:2]
    for r in cases.values():
        b.expect_denied(r, 401)


def test_oversized_authorization_header_is_refused_before_hashing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = auth.keyed_hash

    def spy(key: bytes, purpose: bytes, value: str) -> bytes:
        calls.append(purpose)
        return real(key, purpose, value)

    monkeypatch.setattr(auth, "keyed_hash", spy)
    # Well-formed prefix, 8 KiB + 1 in total: still refused with 400 and never hashed.
    header = "Bearer " + broker.admin.token
    header += " " * (8193 - len(header))
    assert len(header) == 8193
    r = broker.client.get("/v1/auth/token/self", headers={"Authorization": header})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("authorization:")
    assert calls == []
    event = broker.audit_of(r)
    assert event["outcome"] == "invalid" and event["status"] == 400
    r = broker.client.get("/v1/projects", headers={"Authorization": "Bearer " + "A" * 70_000})
    assert r.status_code == 400
    assert calls == []
    # Control: a header of normal size is hashed (so the spy is wired to the code path).
    assert broker.whoami(broker.admin.token).status_code == 200
    assert calls == [b"token"]


# Identifier parts that name a credential or an authentication code (hash-chain hashes are public, so
# `hash` alone is not one); an identifier ending in a neutral part (`token_id`, `secret_name`) is not.
_SENSITIVE = {"secret", "token", "hmac", "mac", "signature", "sig", "credential", "password"}
_NEUTRAL_LAST = {
    "id",
    "ids",
    "type",
    "ttl",
    "ttls",
    "count",
    "kind",
    "name",
    "names",
    "prefix",
    "mode",
    "len",
    "path",
}


def _sensitive(identifier: str) -> bool:
    parts = [p for p in identifier.lower().split("_") if p]
    return bool(parts) and parts[-1] not in _NEUTRAL_LAST and any(p in _SENSITIVE for p in parts)


def _names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)] + [
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    ]


def _is_sql_column(node: ast.AST) -> bool:
    # `table.c.column == value` builds a SQL expression; the database compares, not Python.
    return (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "c"
    )


def _plain_secret_comparisons(source: str) -> list[str]:
    """`==`/`!=` between values whose names say they are credentials or MACs."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            continue
        operands = [node.left, *node.comparators]
        if any(_is_sql_column(o) for o in operands):
            continue
        # Against a literal or a public module constant (a mode such as "fail", None) nothing secret is timed.
        if any(isinstance(o, ast.Constant) or (isinstance(o, ast.Name) and o.id.isupper()) for o in operands):
            continue
        if any(_sensitive(w) for o in operands for w in _names(o)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_secret_comparisons_use_compare_digest() -> None:
    """The credential check uses hmac.compare_digest, and no broker code compares hashes with ==."""
    root = Path(broker_pkg.__file__).parent
    tree = ast.parse((root / "services" / "auth.py").read_text())
    exchange = next(n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.name == "exchange")
    calls = {ast.unparse(n.func) for n in ast.walk(exchange) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    # The checker itself: it flags plain comparisons of credentials and MACs, and lets SQL expressions,
    # flags, ids and public hash-chain values through.
    bad = "a = row.secret_hash == keyed(x)\nb = mac != tag\nc = password == stored\nd = tok == self.token\n"
    assert [hit.split(":")[0] for hit in _plain_secret_comparisons(bad)] == ["1", "2", "3", "4"]
    fine = (
        "q = t.c.token_hash == h\nm = cfg.secret_mode == 'fail'\ni = row.token_id == actor.token_id\n"
        "p = prev_hash != self._prev\ng = h != GENESIS\n"
    )
    assert _plain_secret_comparisons(fine) == []
    offenders = [
        f"{path.relative_to(root)}:{hit}"
        for path in sorted(root.rglob("*.py"))
        for hit in _plain_secret_comparisons(path.read_text())
    ]
    assert offenders == [], "compare secrets with hmac.compare_digest:\n" + "\n".join(offenders)
