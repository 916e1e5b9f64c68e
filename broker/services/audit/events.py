"""The shape of an audit event: a request's event and the broker's own, clipped and cleaned as column
values, and the canonical record the chain hashes and the exports carry."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.audit import canonical
from broker.audit.canonical import FIELDS, JSON_FIELDS, RECORD_FORMAT, canonical_json, format_time
from broker.domain.request import RequestContext, ValueSeen
from broker.domain.scopes import Scope

BATCH = 1000  # rows per database round trip when linking, searching, verifying or exporting
OUTCOMES = ("ok", "denied", "invalid", "error")


_TEXT_LIMITS = {
    "request_id": 64,
    "actor_type": 16,
    "actor_name": 128,
    "token_accessor": 64,
    "source_addr": 64,
    "user_agent": 512,
    "client_kind": 16,
    "method": 16,
    "route": 256,
    "action": 64,
    "project": 64,
    "environment": 64,
    "secret_name": 256,
    "backend": 64,
    "upstream_path": 512,
    "upstream_version": 128,
    "outcome": 16,
    "reason": 2000,
}


def outcome_for(status: int) -> str:
    """Outcome label for an HTTP status."""
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status < 500:
        return "invalid"
    return "error"


def client_kind(user_agent: str | None) -> str:
    """cli, web or api, from the user agent (a hint for auditors, not a security boundary)."""
    if user_agent is None:
        return "api"
    if user_agent.startswith("strongroom-cli/"):
        return "cli"
    if user_agent.startswith("Mozilla/"):
        return "web"
    return "api"


def _text(value: str | None, key: str) -> str | None:
    if not value:
        return None
    # PostgreSQL text holds neither NUL nor lone surrogates; a refused name carrying either must still
    # be audited, so both are replaced rather than refused.
    clean = value.replace("\x00", "\\x00")
    if not clean.isascii():
        clean = clean.encode("utf-8", "replace").decode("utf-8")
    return clean[: _TEXT_LIMITS[key]]


_encode_text = json.encoder.encode_basestring_ascii  # what the canonical encoder writes for a string


class CanonicalJson(str):
    """JSON text this module wrote with `canonical_json`: already its own canonical form, so the
    appender's hash takes it as it is instead of parsing and encoding it again."""

    __slots__ = ()


class ValuesJson(CanonicalJson):
    """The fingerprints column as `_values_json` wrote it, with each item's (environment, name) kept
    beside the text, so the key index (`touched_keys`) does not parse back what was just encoded."""

    # No __slots__: a str subclass cannot have any; the instance dict holds `named`.
    named: tuple[tuple[str | None, str | None], ...]


_WRITTEN_CANONICAL = (CanonicalJson, ValuesJson)


def _values_json(values: Sequence[ValueSeen]) -> str | None:
    if not values:
        return None
    # Written straight in canonical form (keys in sorted order, ASCII escapes, no spaces): a whole
    # environment's event carries one item per value, and a sorting encoder over dicts costs several
    # times as much. The link-hash tests hold it to canonical_json of the same items.
    items = []
    for v in values:
        parts = []
        if v.environment is not None:
            parts.append('"environment":' + _encode_text(v.environment))
        parts.append('"fingerprint":' + _encode_text(v.fingerprint))
        if v.name is not None:
            parts.append('"name":' + _encode_text(v.name))
        if v.version is not None:
            parts.append('"version":' + int.__repr__(v.version))
        items.append("{" + ",".join(parts) + "}")
    out = ValuesJson("[" + ",".join(items) + "]")
    out.named = tuple((v.environment, v.name) for v in values)
    return out


@functools.lru_cache(maxsize=1024)
def _scopes_json(scopes: tuple[Scope, ...]) -> str:
    # A token's scopes are the same in every event of its requests: encoded once per token (and process).
    return CanonicalJson(canonical_json([s.to_json() for s in scopes]).decode("ascii"))


def shape(ctx: RequestContext, *, outcome: str, status: int, now: datetime) -> dict[str, Any]:
    """The request's event as column values (clipped, cleaned; never a value, only fingerprints)."""
    actor = ctx.actor
    return {
        "occurred_at": now,
        "request_id": ctx.request_id,
        "actor_id": actor.principal_id if actor else None,
        "actor_type": _text(actor.principal_type, "actor_type") if actor else "anonymous",
        "actor_name": _text(actor.name, "actor_name") if actor else None,
        "token_accessor": _text(actor.accessor, "token_accessor") if actor else None,
        "scopes": _scopes_json(actor.scopes) if actor else None,
        "source_addr": _text(ctx.source_addr, "source_addr"),
        "user_agent": _text(ctx.user_agent, "user_agent"),
        "client_kind": _text(ctx.client_kind or client_kind(ctx.user_agent), "client_kind"),
        "method": _text(ctx.method, "method") or "-",
        "route": _text(ctx.route, "route") or "-",
        "action": _text(ctx.action, "action"),
        "project": _text(ctx.project, "project"),
        "environment": _text(ctx.environment, "environment"),
        "secret_name": _text(ctx.secret_name, "secret_name"),
        "version": ctx.version,
        "fingerprints": _values_json(ctx.values),
        "backend": _text(ctx.backend, "backend"),
        "upstream_path": _text(ctx.upstream_path, "upstream_path"),
        "upstream_version": _text(ctx.upstream_version, "upstream_version"),
        "outcome": outcome,
        "status": status,
        "reason": _text(ctx.reason, "reason"),
    }


def system_event(action: str, *, now: datetime, reason: str, outcome: str = "ok") -> dict[str, Any]:
    """An event the broker records about itself (clock anomaly, sink failure, prune, rollback)."""
    return {
        "occurred_at": now,
        "request_id": "sys-" + uuid.uuid4().hex,
        "actor_type": "system",
        "actor_name": "strongroom",
        "client_kind": "system",
        "method": "-",
        "route": "-",
        "action": action,
        "outcome": outcome,
        "status": 0,
        "reason": _text(reason, "reason"),
    }


@functools.lru_cache(maxsize=4096)
def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # Not JSON any more (someone edited the row): keep the text, which verification then refuses.
        return text


def _json_field(value: Any) -> Any:
    # Scopes and fingerprints repeat from event to event (the same token, the same values): a small
    # cache of parsed texts saves most of the parsing when verifying or exporting a long chain. The
    # parsed lists are shared, so nothing may modify a record's lists.
    return _parse_json(value) if isinstance(value, str) and len(value) <= 4096 else json_or_text(value)


def json_or_text(value: Any) -> Any:
    """A JSON column's parsed value, or its text when it is not JSON (verification then refuses it)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


_KEEP = frozenset((*canonical.FIELDS, "hash"))


def to_record(columns: Any, *, names: Sequence[str] | None = None, **chain: Any) -> dict[str, Any]:
    """The canonical record of an event from its column values (a mapping, or a row with its column
    `names`), plus `hash` when the row has one; `chain` (seq, prev_hash) overrides the row's. Null fields
    are left out."""
    if names is None and hasattr(columns, "_fields"):
        names = columns._fields
    pairs = zip(names, columns, strict=True) if names is not None else columns.items()
    out: dict[str, Any] = {}
    for key, raw in pairs:
        if raw is None or key not in _KEEP:
            continue
        if key == "occurred_at":
            out[key] = format_time(raw)
        elif key in JSON_FIELDS:
            out[key] = _json_field(raw)
        else:
            out[key] = raw
    out.update(chain)
    return out


# The constant parts of a record's canonical bytes, computed once: every field in the canonical (sorted)
# order, its `"name":` prefix, and how its value is written (0 plain, 1 time, 2 JSON column, 3 seq,
# 4 prev_hash: the last two come from the caller, not the columns).
_DOMAIN = (RECORD_FORMAT + "\n").encode()
_ORDER = tuple(
    (
        key,
        f'"{key}":',
        3
        if key == "seq"
        else 4
        if key == "prev_hash"
        else 1
        if key == "occurred_at"
        else 2
        if key in JSON_FIELDS
        else 0,
    )
    for key in sorted(FIELDS)
)


@functools.lru_cache(maxsize=4096)
def _canonical_json_field(text: str) -> str:
    # The canonical text of a JSON column as its record holds it (parsed, or the text when not JSON);
    # scopes and fingerprints repeat from event to event, so most events find theirs here.
    return canonical_json(_parse_json(text)).decode("ascii")


def link_hash(columns: Mapping[Any, Any], *, seq: int, prev_hash: str) -> str:
    """The chain hash of an event from its column values and its place in the chain: the same digest as
    `record_hash(to_record(columns, seq=seq, prev_hash=prev_hash))` (a test holds them equal), written
    straight from the columns in the canonical order instead of through a record and a sorting encoder."""
    parts = []
    for key, prefix, how in _ORDER:
        raw: Any = seq if how == 3 else prev_hash if how == 4 else columns.get(key)
        if raw is None:
            continue
        if how == 1:
            raw = format_time(raw)
        elif how == 2:
            if type(raw) in _WRITTEN_CANONICAL:  # written in canonical form in this process: parsing it back
                parts.append(prefix + raw)  # and encoding it again gives the same text
                continue
            if type(raw) is str and len(raw) <= 4096:
                parts.append(prefix + _canonical_json_field(raw))
                continue
            raw = _json_field(raw)
        kind = type(raw)
        if kind is str:
            parts.append(prefix + _encode_text(raw))
        elif kind is int:
            parts.append(prefix + int.__repr__(raw))
        else:  # anything else (a list, a bool, a float) exactly as the canonical encoder writes it
            parts.append(prefix + canonical_json(raw).decode("ascii"))
    return hashlib.sha256(_DOMAIN + ("{" + ",".join(parts) + "}").encode("ascii")).hexdigest()
