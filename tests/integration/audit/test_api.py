"""The auditor's API (journey 5): list with filters and paging, the fingerprint look-up, exports that verify
offline, and the rules around them: an `audit` grant gives this and nothing else, a project-scoped
auditor sees only its project (D26), every look is itself audited (PCI DSS 10.2.1.3), the fingerprint
route is rate limited and never keeps or logs the candidate value."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.integration.audit.conftest import AuditApi, broker, cli_verify, lines
from tests.integration.secrets.conftest import random_value

AUDITOR = [{"project": "*", "environments": "*", "actions": ["audit"]}]


def events(api: AuditApi, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = api.client.get("/v1/audit/events", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def journey(api: AuditApi) -> tuple[dict[str, str], dict[str, str], str]:
    """Production's DATABASE_URL read by a CI identity, and a failed read; returns (ci, auditor, value)."""
    value = random_value()
    assert api.put("production", "DATABASE_URL", value).status_code == 200
    ci = api.token_for(
        [{"project": "microblog", "environments": "production", "actions": ["read"]}], name="ci"
    )
    for _ in range(2):
        assert api.client.get(api.url("production", "DATABASE_URL"), headers=ci).status_code == 200
    assert api.client.get(api.url("common", "DATABASE_URL"), headers=ci).status_code == 403
    auditor = api.token_for(AUDITOR, name="auditor")
    return ci, auditor, value


def test_who_read_database_url_in_production(api: AuditApi) -> None:
    _, auditor, value = journey(api)
    page = events(
        api,
        auditor,
        project="microblog",
        environment="production",
        name="DATABASE_URL",
        action="secret.read",
        since="90d",
    )
    reads = page["events"]
    assert [(e["actor_name"], e["outcome"], e["source_addr"], e["version"]) for e in reads] == [
        ("ci", "ok", "127.0.0.1", 1)
    ] * 2
    assert reads[0]["seq"] > reads[1]["seq"]  # newest first
    assert reads[0]["scopes"] == [{"actions": ["read"], "environments": "production", "project": "microblog"}]
    assert reads[0]["token_accessor"].startswith("sra_") and reads[0]["client_kind"] == "api"
    assert value not in str(page)
    denied = events(api, auditor, actor="ci", outcome="denied")["events"]
    assert [(e["action"], e["environment"]) for e in denied] == [("secret.read", "common")]
    # The auditor's own looks are recorded.
    looks = events(api, auditor, action="audit.*", actor="auditor")["events"]
    assert len(looks) >= 2 and all(e["outcome"] == "ok" for e in looks)


def test_filters_and_paging(api: AuditApi) -> None:
    journey(api)
    auditor = api.token_for(AUDITOR, name="pager")
    everything = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = events(api, auditor, **params)
        everything += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == len(set(seqs)) and len(seqs) > 6
    oldest = events(api, auditor, order="oldest", limit=2)["events"]
    assert [e["seq"] for e in oldest] == [1, 2]
    assert events(api, auditor, source="127.0.0.0/8", limit=1)["events"]
    assert events(api, auditor, source="10.0.0.0/8")["events"] == []
    assert events(api, auditor, since="2999-01-01")["events"] == []
    assert events(api, auditor, until="2000-01-01T00:00:00Z")["events"] == []
    for bad in (
        {"since": "yesterday"},
        {"source": "nowhere"},
        {"action": "DROP TABLE"},
        {"fingerprint": "x"},
    ):
        r = api.client.get("/v1/audit/events", params=bad, headers=auditor)
        assert r.status_code == 400, (bad, r.text)
        assert next(iter(bad)) in r.json()["detail"]


def test_the_audit_grant_gives_this_and_nothing_else(api: AuditApi) -> None:
    _, auditor, _ = journey(api)
    assert api.client.get(api.url("production", "DATABASE_URL"), headers=auditor).status_code == 403
    assert api.client.get(api.url("production"), headers=auditor).status_code == 403
    assert api.client.put(api.url("common", "X"), json={"value": "x"}, headers=auditor).status_code == 403
    reader = api.token_for(
        [{"project": "*", "environments": "*", "actions": ["read", "write", "admin"]}], name="rw"
    )
    for method, path in (
        ("GET", "/v1/audit/events"),
        ("GET", "/v1/audit/export"),
        ("GET", "/v1/audit/checkpoints"),
        ("GET", "/v1/audit/status"),
        ("POST", "/v1/audit/fingerprint"),
    ):
        r = api.client.request(method, path, headers=reader)
        assert r.status_code == 403, (method, path, r.status_code)
        assert api.one_audit(r.headers["x-request-id"])["outcome"] == "denied"


def test_a_project_auditor_sees_only_its_project(api: AuditApi) -> None:
    journey(api)
    api.make_project("other")
    api.make_env("prod", project="other")
    assert (
        api.client.put(
            api.url("prod", "SECRET", project="other"), json={"value": "x"}, headers=api.h
        ).status_code
        == 200
    )
    narrow = api.token_for(
        [{"project": "microblog", "environments": "prod*", "actions": ["audit"]}], name="narrow"
    )
    seen = events(api, narrow, limit=500)["events"]
    assert seen and {(e["project"], e["environment"]) for e in seen} == {("microblog", "production")}
    assert events(api, narrow, project="other")["events"] == []
    r = api.client.get("/v1/audit/export", headers=narrow)
    assert r.status_code == 403 and "every project" in r.json()["detail"]
    fp = api.client.post("/v1/audit/fingerprint", json={"value": "x"}, headers=narrow).json()
    assert all(e["project"] == "microblog" for e in fp["events"])


def test_fingerprint_finds_where_a_leaked_value_went(api: AuditApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, auditor, value = journey(api)
    r = api.client.post("/v1/audit/fingerprint", json={"value": value}, headers=auditor)
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["fingerprint"].startswith("hmac-sha256:") and not found["more"]
    assert [(e["action"], e["actor_name"]) for e in found["events"]] == [
        ("secret.read", "ci"),
        ("secret.read", "ci"),
        ("secret.write", "admin"),
    ]
    assert all(found["fingerprint"] in str(e["fingerprints"]) for e in found["events"])
    miss = api.client.post("/v1/audit/fingerprint", json={"value": value + "x"}, headers=auditor).json()
    assert miss["events"] == [] and miss["fingerprint"] != found["fingerprint"]
    # The look-up is audited with the candidate's fingerprint, never the candidate.
    look = api.one_audit(r.headers["x-request-id"])
    assert look["action"] == "audit.fingerprint" and found["fingerprint"] in look["fingerprints"]
    assert value not in str(api.all_audit())
    assert all(value not in rec.getMessage() for rec in caplog.records)
    # Strict body: the audit grant is checked before the body is even read.
    for bad in ({"value": 5}, {"value": "x", "more": 1}, []):
        r = api.client.post("/v1/audit/fingerprint", json=bad, headers=auditor)
        assert r.status_code == 400 and "body" in r.json()["detail"]


def test_fingerprint_is_rate_limited(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path, audit_fingerprint_limit=3, audit_fingerprint_window=3600) as api:
        auditor = api.token_for(AUDITOR, name="auditor")
        codes = [
            api.client.post("/v1/audit/fingerprint", json={"value": f"v{i}"}, headers=auditor).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
        r = api.client.post("/v1/audit/fingerprint", json={"value": "v"}, headers=auditor)
        assert int(r.headers["retry-after"]) > 0
        assert api.one_audit(r.headers["x-request-id"])["outcome"] == "denied"


def test_exports_verify_offline_in_both_formats(api: AuditApi) -> None:
    journey(api)
    api.checkpoint()
    api.traffic(2)
    auditor = api.token_for(AUDITOR, name="exporter")
    r = api.client.get("/v1/audit/export", headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["cache-control"] == "no-store"
    export = api.tmp / "all.jsonl"
    export.write_bytes(r.content)
    items = lines(r.content)
    header = items[0]["export"]
    assert header["to_head"] is True and header["from_seq"] == 1
    assert items[-1] == {"end": {"events": header["to_seq"]}}
    done = cli_verify(export, api.public_key_file(), api.checkpoint_dir)
    assert done.exit_code == 0 and done.output.startswith("ok: "), done.output
    # the export was itself audited, before any record left
    assert api.one_audit(r.headers["x-request-id"])["action"] == "audit.export"
    r = api.client.get("/v1/audit/export", params={"format": "csv", "since": "1h"}, headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith("seq,prev_hash,occurred_at")


def test_checkpoints_and_status(api: AuditApi) -> None:
    api.traffic(2)
    signed = api.checkpoint()
    assert signed is not None
    auditor = api.token_for(AUDITOR, name="auditor")
    cps = api.client.get("/v1/audit/checkpoints", headers=auditor).json()
    assert cps["key_id"] == api.rt.audit.signer.public.key_id
    assert cps["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert [c["checkpoint"]["seq"] for c in cps["checkpoints"]] == [signed.seq]
    status = api.client.get("/v1/audit/status", headers=auditor).json()
    assert status["head"]["seq"] >= signed.seq and status["read_only"] is None
    assert status["last_checkpoint"]["checkpoint"]["seq"] == signed.seq
    assert {s["name"] for s in status["sinks"]} >= {"database"}


def test_an_action_family_name_finds_the_whole_family(api: AuditApi) -> None:
    """Issue 17: `--action secret` as people type it finds what `secret.*` finds; a part of a name finds nothing."""
    _, auditor, _ = journey(api)
    family = events(api, auditor, action="secret", actor="ci")["events"]
    assert family and family == events(api, auditor, action="secret.*", actor="ci")["events"]
    assert {e["action"] for e in family} == {"secret.read"}
    assert events(api, auditor, action="secre", actor="ci")["events"] == []
    r = api.client.get("/v1/audit/events", params={"action": "Secret"}, headers=auditor)
    assert r.status_code == 400 and "a family such as secret" in r.text
