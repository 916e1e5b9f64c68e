"""Canonical audit records: a pinned test vector (hashes never change between versions), null
omission, and E33: text fields cannot break the one-line record format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.audit.canonical import (
    GENESIS,
    RecordError,
    canonical_json,
    check_record,
    format_time,
    hashed_bytes,
    line,
    parse_time,
    record_hash,
)

VECTOR = {
    "seq": 1,
    "prev_hash": GENESIS,
    "occurred_at": "2026-11-26T10:49:42.719316Z",
    "request_id": "4f1c0de2a9b84f6e9d3c2b1a00112233",
    "actor_id": 7,
    "actor_type": "machine",
    "actor_name": "ci-bot",
    "token_accessor": "sra_abc",
    "scopes": [{"actions": ["read"], "environments": "production", "project": "microblog"}],
    "source_addr": "192.0.2.10",
    "user_agent": "strongroom-cli/0.1.0",
    "client_kind": "cli",
    "method": "GET",
    "route": "/v1/projects/microblog/environments/production/secrets/DATABASE_URL",
    "action": "secret.read",
    "project": "microblog",
    "environment": "production",
    "secret_name": "DATABASE_URL",
    "version": 3,
    "fingerprints": [
        {
            "environment": "production",
            "fingerprint": "hmac-sha256:" + "ab" * 32,
            "name": "DATABASE_URL",
            "version": 3,
        }
    ],
    "outcome": "ok",
    "status": 200,
    "reason": None,
}
VECTOR_BYTES = (
    b"strongroom-audit/1\n"
    b'{"action":"secret.read","actor_id":7,"actor_name":"ci-bot","actor_type":"machine","client_kind":"cli",'
    b'"environment":"production","fingerprints":[{"environment":"production","fingerprint":"hmac-sha256:'
    + b"ab"
    * 32
    + b'","name":"DATABASE_URL","version":3}],"method":"GET","occurred_at":"2026-11-26T10:49:42.719316Z",'
    b'"outcome":"ok","prev_hash":"' + b"0" * 64 + b'","project":"microblog",'
    b'"request_id":"4f1c0de2a9b84f6e9d3c2b1a00112233",'
    b'"route":"/v1/projects/microblog/environments/production/secrets/DATABASE_URL",'
    b'"scopes":[{"actions":["read"],"environments":"production","project":"microblog"}],'
    b'"secret_name":"DATABASE_URL","seq":1,"source_addr":"192.0.2.10","status":200,"token_accessor":"sra_abc",'
    b'"user_agent":"strongroom-cli/0.1.0","version":3}'
)
VECTOR_HASH = "4984a89686da97a929a69d651db8119369d81ee174dcae5dd59b58df8c07b9f8"


def test_pinned_vector() -> None:
    """If this fails, every hash ever written by a broker would stop verifying: do not change it."""
    assert hashed_bytes(VECTOR) == VECTOR_BYTES
    assert record_hash(VECTOR) == VECTOR_HASH
    check_record(VECTOR)


def test_null_fields_and_the_stored_hash_are_not_hashed() -> None:
    """A later version may add optional fields: records without them keep their hash."""
    with_extra_nulls = {**VECTOR, "backend": None, "upstream_path": None, "hash": "f" * 64}
    assert record_hash(with_extra_nulls) == VECTOR_HASH
    assert record_hash({**VECTOR, "reason": ""}) != VECTOR_HASH  # empty is not null


def test_key_order_does_not_matter() -> None:
    assert record_hash(dict(reversed(list(VECTOR.items())))) == VECTOR_HASH


@pytest.mark.parametrize(
    "evil",
    [
        "a\nb",
        "a\r\nb",
        "a\u2028b\u2029c",
        "\x1b[31mred\x1b[0m",
        '"},{"outcome":"ok","x":"',
        '\\"\n{}',
        "\x00nul",
        "\u202eevil bidi",
        "日本語",
    ],
)
def test_e33_text_stays_inside_its_field(evil: str) -> None:
    record = {**VECTOR, "user_agent": evil, "secret_name": evil, "reason": evil}
    text = line(record)
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    assert text.isascii()
    assert b"\x1b" not in text and b"\r" not in text and b"\xe2\x80\xa8" not in text
    back = json.loads(text)
    assert back["user_agent"] == back["secret_name"] == back["reason"] == evil
    assert back["outcome"] == "ok"


@given(st.text())
def test_any_text_is_one_line_and_round_trips(value: str) -> None:
    encoded = canonical_json({"v": value})
    assert b"\n" not in encoded and encoded.isascii()
    assert json.loads(encoded)["v"] == value


def test_time_format_is_fixed_utc_micros() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-01-02T01:04:05.000000Z"
    assert parse_time(format_time(moment)) == moment.astimezone(UTC)
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": None}, "seq"),
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"prev_hash": "abc"}, "prev_hash"),
        ({"occurred_at": "2026-11-26 10:49:42"}, "occurred_at"),
        ({"scopes": "[]"}, "scopes"),
        ({"route": 5}, "route"),
        ({"invented": "x"}, "invented"),
    ],
)
def test_malformed_records_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(RecordError, match=field):
        check_record({**VECTOR, **change})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)


@given(_JSON)
def test_canonical_json_is_json_dumps_sorted_compact_ascii(value: object) -> None:
    # The encoder is built once and skips circular-reference checks (speed only): the bytes stay json.dumps'.
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    assert canonical_json(value) == expected.encode("ascii")


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
