"""Catalogue 62, input never echoed: a request's unknown field names, oversized names, control characters
and JSON fragments reach the 400 body only as a bounded plain name (at most 64 characters of
[A-Za-z0-9_.-], else not at all) and the audit record never: there an unknown field is named by its
position. Each case on SQLite and PostgreSQL, read back from the real audit rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.audit.conftest import AuditApi

# The key a client sent by mistake: a value where a field name goes.
LEAKED = "MYSECRETKEYNAME_hunter2"
HOSTILE = {
    "unknown name": LEAKED,
    "oversized name": "N" * 100_000,
    "control characters": "evil\x1b[2J\r\n\x00\u2028\x9bname",
    "JSON fragment": '"},{"outcome":"ok","reason":"forged',
}


def _refused(api: AuditApi, method: str, url: str, body: Any) -> tuple[str, dict[str, Any]]:
    """Send the body; return the 400's detail and the request's audit record (its reason checked)."""
    r = api.client.request(
        method, url, content=json.dumps(body), headers={**api.h, "Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    api.chain()
    (event,) = [e for e in api.linked() if e["request_id"] == r.headers["x-request-id"]]
    assert event["outcome"] == "invalid"
    return str(r.json()["detail"]), event


def _carries(event: dict[str, Any], text: str) -> bool:
    """Whether any column of the record holds the text (or, for long text, any 32-character slice)."""
    fields = " ".join(str(v) for v in event.values())
    probes = [text] if len(text) <= 32 else [text[i : i + 32] for i in range(0, len(text) - 31, 997)]
    return any(p in fields for p in probes)


RECORDED = "body: key 2 of 2 is not a field of this request (unknown names are not recorded)"


def test_a_plain_unknown_name_goes_back_to_its_sender_but_not_on_record(api: AuditApi) -> None:
    detail, event = _refused(api, "PUT", api.url("common", "K"), {"value": "v", LEAKED: "x"})
    assert detail == f"{LEAKED}: Extra inputs are not permitted"
    assert event["reason"] == RECORDED and not _carries(event, "hunter2")


@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"unknown name"}))
def test_an_unknown_name_that_is_not_plain_is_shown_nowhere(api: AuditApi, case: str) -> None:
    key = HOSTILE[case]
    detail, event = _refused(api, "PUT", api.url("common", "K"), {"value": "v", key: "x"})
    assert detail == "body: key 2 of 2 is not a field of this request (its name is not shown)"
    assert event["reason"] == RECORDED and not _carries(event, key)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unknown_nested_field_keeps_the_schema_path(api: AuditApi, case: str) -> None:
    key = HOSTILE[case]
    scope = {"project": "*", "environments": "*", "actions": ["read"], key: 1}
    body = {"name": "n", "type": "machine", "scopes": [scope]}
    detail, event = _refused(api, "POST", "/v1/identities", body)
    shown = f"scopes.0.{key}: Extra inputs are not permitted"
    assert detail == (shown if case == "unknown name" else detail)
    assert (
        event["reason"]
        == "scopes.0: key 4 of 4 is not a field of this request (unknown names are not recorded)"
    )
    assert not _carries(event, key)
    if case != "unknown name":
        assert key not in detail and detail.startswith("scopes.0: key 4 of 4")


def test_a_wrong_type_names_the_schema_field_and_not_the_value(api: AuditApi) -> None:
    detail, event = _refused(api, "PUT", api.url("common", "K"), {"value": "v", "cas": LEAKED})
    assert detail.startswith("cas: ") and LEAKED not in detail and not _carries(event, LEAKED)
    assert event["reason"] == detail


def test_shown_parts_are_bounded_plain_names() -> None:
    from broker.api.errors import describe_validation_error
    from broker.domain.names import NOT_SHOWN, shown

    assert shown("scopes") == "scopes" and shown(3) == "3" and shown("a.b-c_9") == "a.b-c_9"
    assert shown("x" * 64) == "x" * 64
    for hostile in ("x" * 65, "", "a b", "a\nb", "ä", '"}', "a/b", "\x1b[2J"):
        assert shown(hostile) == NOT_SHOWN
    # A mapping key chosen by the request is one such part.
    error = {
        "type": "string_type",
        "loc": ("body", "labels", "\x1b[31mred"),
        "msg": "Input should be a valid string",
    }
    assert (
        describe_validation_error(error, None) == (f"labels.{NOT_SHOWN}: Input should be a valid string",) * 2
    )
    # A message that quotes its input (no rule of ours does today) loses the quote.
    quoting = {
        "type": "value_error",
        "loc": ("body", "x"),
        "msg": f"Value error, {LEAKED} is bad",
        "input": LEAKED,
    }
    assert describe_validation_error(quoting, None) == ("x: invalid value",) * 2
