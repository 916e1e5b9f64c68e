"""D24/D25: names and slugs are refused, never normalised and accepted.

Requests go through `Api.raw`, which hands the app exactly the path a server (uvicorn) would: the
percent-decoding of the request target. That matters for dot segments, which HTTP clients remove
before sending.

Two outcomes are possible and each case below says which:
- 400 from the broker's name rules, with a problem detail naming the field and the rule;
- 404 "no such route" when the decoded path has an extra `/`, so no route's `{name}` segment can
  match (a leading `/`, `%2f` traversal, `....//`) or the name is empty (`/secrets/`); the router
  refuses before any handler runs.
Either way nothing stored changes and the request's audit event has outcome `invalid`.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.integration.secrets.conftest import PROJECT, Api, Reply, problem, random_value

NAME_RULE = "must match [A-Za-z_][A-Za-z0-9_]*"
SLUG_RULE = "must be lower-case letters, digits and '-'"

BAD_NAMES: dict[str, str] = {
    "dotdot": "..",
    "dot": ".",
    "backslash": "DB\\PASSWORD",
    "backslash-traversal": "..\\..\\etc",
    "nul": "DB_PASSWORD\x00",
    "control": "DB\x01PASSWORD",
    "newline": "DB_PASSWORD\n",
    "escape": "DB\x1b[31mPASSWORD",
    "bidi": "DB_\u202ePASSWORD",
    "zero-width": "DB_\u200bPASSWORD",
    "non-nfc": "CAFE\u0301",
    "nfc-but-not-ascii": "CAF\u00c9",
    "cyrillic-er": "DB_\u0440ASSWORD",
    "fullwidth": "\uff24\uff22_PASSWORD",
    "too-long": "A" * 257,
    "too-long-wide": "\u00e9" * 129,
    "whitespace": " ",
    "tab": "\t",
    "padded": " DB_PASSWORD",
    "inner-space": "DB PASSWORD",
    "leading-digit": "1PASSWORD",
    "double-encoded-traversal": "%2e%2e%2fetc",
    "dash": "DB-PASSWORD",
}

# Request targets (already percent-encoded) that no route can match: 404 from the router.
UNROUTABLE: dict[str, str] = {
    "leading-slash": "/%2Fetc%2Fpasswd",
    "double-slash": "//DB_PASSWORD",
    "percent-traversal": "/%2e%2e%2fetc%2fpasswd",
    "dots-and-slashes": "/....//etc",
    "plain-traversal": "/../../../etc/passwd",
    "empty-then-more": "//versions",
}


@pytest.fixture
def seeded(api: Api) -> Api:
    assert api.put("production", "DB_PASSWORD", random_value()).status_code == 200
    assert api.put("common", "DB_PASSWORD", random_value()).status_code == 200
    return api


def secret_target(name: str, env: str = "production", project: str = PROJECT) -> str:
    return f"/v1/projects/{quote(project, safe='')}/environments/{quote(env, safe='')}/secrets/{quote(name, safe='')}"


ROLLBACK_BODY = {"chunks": [b'{"version": 1}'], "headers": [("content-type", "application/json")]}


def put_body(value: str) -> dict[str, object]:
    return {
        "chunks": [json.dumps({"value": value}).encode()],
        "headers": [("content-type", "application/json")],
    }


def assert_refused(api: Api, r: Reply, field: str, rule: str, bad: str) -> None:
    body = problem(r, 400)
    assert body["detail"].startswith(f"{field}:"), body
    assert rule in body["detail"], body
    if len(bad) > 2 and not bad.isascii():
        assert bad not in body["detail"]
    event = api.one_audit(r.request_id)
    assert (event["outcome"], event["status"]) == ("invalid", 400)


def test_bad_secret_names_are_400_and_change_nothing(seeded: Api, subtests: pytest.Subtests) -> None:
    api = seeded
    before = api.stored()
    values = []
    for case, bad in sorted(BAD_NAMES.items()):
        with subtests.test(case=case):
            target = secret_target(bad)
            value = random_value()
            values.append(value)
            for method, path, extra in (
                ("GET", target, {}),
                ("PUT", target, put_body(value)),
                ("DELETE", target, {}),
                ("GET", f"{target}/versions", {}),
                ("POST", f"{target}/undelete", {}),
                ("POST", f"{target}/versions/1/destroy", {}),
                ("POST", f"{target}/rollback", ROLLBACK_BODY),
            ):
                r = api.raw(method, path, **extra)  # type: ignore[arg-type]
                assert_refused(api, r, "name", NAME_RULE, bad)
            assert api.stored() == before
    audit_text = json.dumps([str(e) for e in api.all_audit()])
    assert not any(v in audit_text for v in values)


def test_nul_in_a_name_is_audited_escaped(seeded: Api) -> None:
    """PostgreSQL text cannot hold NUL; the refused request must still get its audit event."""
    r = seeded.raw("GET", secret_target("DB_PASSWORD\x00"))
    assert_refused(seeded, r, "name", NAME_RULE, "DB_PASSWORD\x00")
    event = seeded.one_audit(r.request_id)
    assert event["secret_name"] == "DB_PASSWORD\\x00"
    assert "\x00" not in event["route"]


def test_slashes_and_empty_names_never_reach_a_handler(seeded: Api, subtests: pytest.Subtests) -> None:
    api = seeded
    before = api.stored()
    base = f"/v1/projects/{PROJECT}/environments/production/secrets"
    for case, tail in sorted(UNROUTABLE.items()):
        with subtests.test(case=case):
            for method in ("GET", "PUT", "DELETE"):
                extra = put_body(random_value()) if method == "PUT" else {}
                r = api.raw(method, base + tail, **extra)  # type: ignore[arg-type]
                # No route matches, so no secret handler ran and nothing can be read or written.
                body = problem(r, 404)
                assert body["detail"] == "no such route"
                event = api.one_audit(r.request_id)
                assert (event["outcome"], event["action"]) == ("invalid", "request.unrouted")

    # `/secrets/` has an empty name segment. It is a 404 "no such route", never a redirect to the
    # list route (Starlette's default slash redirect would answer 307 and audit it as `ok`).
    for method in ("GET", "PUT", "DELETE"):
        extra = put_body(random_value()) if method == "PUT" else {}
        r = api.raw(method, base + "/", **extra)  # type: ignore[arg-type]
        body = problem(r, 404)
        assert body["detail"] == "no such route"
        assert "location" not in r.headers
        assert api.one_audit(r.request_id)["outcome"] == "invalid"
    assert api.stored() == before


BAD_SLUGS: list[tuple[str, str, str]] = [
    ("Microblog", "production", "project"),
    ("microblog", "Production", "environment"),
    ("microblog", "PRODUCTION", "environment"),
    ("microblog", "\u0440roduction", "environment"),  # Cyrillic er
    ("micr\u043eblog", "production", "project"),  # Cyrillic o
    ("microblog", "production\u200b", "environment"),
    ("microblog", "..", "environment"),
    ("microblog", "-production", "environment"),
    ("microblog", "prod_uction", "environment"),
    ("microblog", "p" * 65, "environment"),
    ("microblog", " production", "environment"),
    ("microblog", "production\x00", "environment"),
]


def test_bad_slugs_are_400_and_never_reach_another_scope(seeded: Api, subtests: pytest.Subtests) -> None:
    api = seeded
    before = api.stored()
    for project, env, field in BAD_SLUGS:
        with subtests.test(project=project, environment=env):
            target = secret_target("DB_PASSWORD", env=env, project=project)
            env_base = f"/v1/projects/{quote(project, safe='')}/environments/{quote(env, safe='')}"
            for method, path, extra in (
                ("GET", target, {}),
                ("PUT", target, put_body(random_value())),
                ("GET", f"{env_base}/secrets", {}),
                ("GET", f"{env_base}/resolved", {}),
                ("GET", f"{target}/versions", {}),
            ):
                r = api.raw(method, path, **extra)  # type: ignore[arg-type]
                assert_refused(api, r, field, SLUG_RULE, env if field == "environment" else project)
                assert "value" not in r.json() and "values" not in r.json()
            assert api.stored() == before


def test_valid_names_are_case_sensitive_and_accepted_at_the_limits(api: Api) -> None:
    """Secret names are case-sensitive environment-variable names: `Db` is not `DB`, and reading
    one never returns the other's value."""
    upper, lower = random_value(), random_value()
    assert api.put("common", "DB", upper).status_code == 200
    problem(api.get("common", "db"), 404)
    problem(api.get("common", "Db"), 404)
    assert api.put("common", "db", lower).status_code == 200
    assert api.value("common", "DB") == upper
    assert api.value("common", "db") == lower

    for name in ("A" * 256, "_", "a1_B2", "_0"):
        value = random_value()
        r = api.put("common", name, value)
        assert r.status_code == 200, r.text
        assert api.value("common", name) == value
