"""Canonical audit records: the exact bytes that are hashed. Pinned by a test vector; never change them.

A record is one flat JSON object. Canonical form: keys sorted, no whitespace, ASCII only (every
non-ASCII or control character, U+2028 included, becomes a \\u escape, so a record is always exactly
one line and a newline, ANSI escape or JSON fragment inside a field stays inside that field), integers
as integers, times as UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`. A field whose value is null is left out, so a
later version can add optional fields without changing the hash of any earlier record.

The chain: record `seq` carries `prev_hash`, the hash of record `seq - 1` (GENESIS for seq 1), and
    hash = hex(SHA-256(b"strongroom-audit/1\\n" + canonical(record without "hash")))
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

RECORD_FORMAT = "strongroom-audit/1"
GENESIS = "0" * 64
_DOMAIN = (RECORD_FORMAT + "\n").encode()

# Every field a record may hold, in display order; `hash` is stored beside the record, not hashed.
FIELDS: tuple[str, ...] = (
    "seq",
    "prev_hash",
    "occurred_at",
    "request_id",
    "actor_id",
    "actor_type",
    "actor_name",
    "token_accessor",
    "scopes",
    "source_addr",
    "user_agent",
    "client_kind",
    "method",
    "route",
    "action",
    "project",
    "environment",
    "secret_name",
    "version",
    "fingerprints",
    "backend",
    "upstream_path",
    "upstream_version",
    "outcome",
    "status",
    "reason",
)
INT_FIELDS = frozenset({"seq", "actor_id", "version", "status"})
JSON_FIELDS = frozenset({"scopes", "fingerprints"})
REQUIRED = frozenset(
    {"seq", "prev_hash", "occurred_at", "request_id", "method", "route", "outcome", "status"}
)
_TYPES: dict[str, type] = {
    key: int if key in INT_FIELDS else list if key in JSON_FIELDS else str for key in FIELDS
}
_TYPE_NAMES = {int: "an integer", list: "a list", str: "a string"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class RecordError(ValueError):
    """A record that is not well formed (a missing or mistyped field); the message names the field."""


def format_time(moment: datetime) -> str:
    """The one time format of records: UTC with microseconds and a Z."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("naive datetime in an audit record")
    if offset:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of format_time."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# One encoder for every call (json.dumps builds one per call). No circular-reference bookkeeping: records
# are trees of JSON values (built by the broker or read back from JSON text), and skipping it makes a
# big event (a compile's 1,000 fingerprints) about a fifth cheaper to encode. Same bytes either way.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only, no NaN: the same bytes for the same data, always."""
    return _ENCODER.encode(value).encode("ascii")


def is_hash(value: object) -> bool:
    """Whether value is 64 lower-case hex digits."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_record(record: Mapping[str, Any]) -> None:
    """Raise RecordError unless the record has the right fields with the right types."""
    for key in REQUIRED:
        if record.get(key) is None:
            raise RecordError(f"{key}: missing")
    for key, value in record.items():
        if value is None or key == "hash":
            continue
        wanted = _TYPES.get(key)
        if wanted is None:
            raise RecordError(f"{key}: not a field of {RECORD_FORMAT}")
        if type(value) is not wanted:  # exact: a bool is not an integer here
            raise RecordError(f"{key}: must be {_TYPE_NAMES[wanted]}")
    if _HEX64.fullmatch(record["prev_hash"]) is None:
        raise RecordError("prev_hash: must be 64 lower-case hex digits")
    if _TIME.fullmatch(record["occurred_at"]) is None:
        raise RecordError("occurred_at: must be YYYY-MM-DDTHH:MM:SS.ffffffZ")


def hashed_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes whose SHA-256 is the record's hash: null fields and `hash` itself left out."""
    body = dict(record)
    body.pop("hash", None)
    if None in body.values():
        body = {k: v for k, v in body.items() if v is not None}
    return _DOMAIN + canonical_json(body)


def record_hash(record: Mapping[str, Any]) -> str:
    """The record's chain hash (hex)."""
    return hashlib.sha256(hashed_bytes(record)).hexdigest()


def line(record: Mapping[str, Any]) -> bytes:
    """One record as one line of JSON (for the file and syslog sinks and JSON-lines exports)."""
    return canonical_json({k: v for k, v in record.items() if v is not None}) + b"\n"
