"""`link_hash` (the appender's and the chainer's hash, written straight from column values) gives the
same digest as the reference, `record_hash(to_record(...))`, which verification uses: for any event; and
the key index's `touched_keys` reads a fresh event's values as it reads them back from a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.audit.canonical import FIELDS, GENESIS, canonical_json, record_hash
from broker.domain.request import Actor, RequestContext, ValueSeen
from broker.domain.scopes import scopes_from_json
from broker.services.audit.events import CanonicalJson, link_hash, shape, system_event, to_record
from broker.services.audit.writing import touched_keys

WHEN = datetime(2026, 12, 4, 22, 30, 1, 123456, tzinfo=UTC)
HEAD = "ab" * 32


def reference(columns: dict[str, Any], seq: int, prev: str) -> str:
    return record_hash(to_record(columns, seq=seq, prev_hash=prev))


texts = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "é", "\u2028", "\x00", "\x1b[31m", '"},{"a":1', "\ud800"]
)


@given(
    name=texts,
    env=texts,
    agent=st.none() | texts,
    reason=st.none() | texts,
    version=st.none() | st.integers(min_value=0, max_value=2**62),
    prints=st.lists(
        st.tuples(st.none() | texts, st.none() | texts, st.none() | st.integers(0, 9)), max_size=60
    ),
    seq=st.integers(min_value=1, max_value=2**62),
)
def test_a_shaped_request_event_hashes_as_its_record(
    name: str,
    env: str,
    agent: str | None,
    reason: str | None,
    version: int | None,
    prints: list[tuple[str | None, str | None, int | None]],
    seq: int,
) -> None:
    ctx = RequestContext("req-1", "GET", "/v1/x", "10.0.0.1", agent, environment=env, secret_name=name)
    ctx.version, ctx.reason = version, reason
    ctx.values = [ValueSeen(e, n, v, "f" * 43) for e, n, v in prints]
    event = shape(ctx, outcome="ok", status=200, now=WHEN)
    # The shaped JSON column is taken as written (no parse, no re-encoding): its own canonical form.
    assert (event["fingerprints"] is None) == (not prints)
    assert prints == [] or isinstance(event["fingerprints"], CanonicalJson)
    assert link_hash(event, seq=seq, prev_hash=HEAD) == reference(event, seq, HEAD)
    # The same text read back from a database (a plain str) takes the parsing path: same digest, and
    # the same keys for the index as the ones kept beside the text when it was written.
    if prints:
        read_back = {**event, "fingerprints": str(event["fingerprints"])}
        assert link_hash(read_back, seq=seq, prev_hash=HEAD) == reference(event, seq, HEAD)
        assert touched_keys({**event, "project": "p"}) == touched_keys({**read_back, "project": "p"})


def test_a_system_event_and_the_first_link() -> None:
    event = system_event("audit.clock_anomaly", now=WHEN, reason="stepped back 1.000 s", outcome="error")
    assert link_hash(event, seq=1, prev_hash=GENESIS) == reference(event, 1, GENESIS)


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": WHEN.astimezone(timezone(timedelta(hours=-5)))},  # another offset: written as UTC
        {"scopes": '[ {"b": 1, "a": [2, 1]} ]'},  # JSON not in canonical form: re-encoded
        {"fingerprints": "not json"},  # an edited row: the text itself
        {"fingerprints": canonical_json([{"fingerprint": "x" * 60, "name": "N"}] * 80).decode()},  # > 4096
        {"fingerprints": [{"name": "N", "fingerprint": "f"}]},  # already a list
        {"status": True, "version": 0},  # a bool is not an integer; zero is not null
        {"hash": "cd" * 32, "id": 7, "extra": "ignored"},  # columns that are not record fields
        {"seq": 99, "prev_hash": "ef" * 32},  # the row's own chain columns are overridden
        {"reason": None, "actor_name": None},
    ],
)
def test_edge_columns_hash_as_their_record(change: dict[str, Any]) -> None:
    event = {**system_event("audit.prune", now=WHEN, reason="r"), "scopes": "[]", **change}
    assert link_hash(event, seq=5, prev_hash=HEAD) == reference(event, 5, HEAD)


def test_every_field_counts() -> None:
    """A change to any field but the chain's changes the hash (no field is skipped)."""
    base = {key: f"v-{key}" for key in FIELDS if key not in ("seq", "prev_hash", "occurred_at")}
    base["occurred_at"] = WHEN
    first = link_hash(base, seq=3, prev_hash=HEAD)
    assert first == reference(base, 3, HEAD)
    for key in base:
        changed = {**base, key: WHEN + timedelta(microseconds=1) if key == "occurred_at" else "other"}
        assert link_hash(changed, seq=3, prev_hash=HEAD) != first, key
    assert link_hash(base, seq=4, prev_hash=HEAD) != first
    assert link_hash(base, seq=3, prev_hash=GENESIS) != first


def test_an_actors_scopes_hash_as_their_record() -> None:
    scopes = scopes_from_json(
        [
            {"project": "shop", "environments": "prod*", "actions": ["read", "write"], "keys": ["B", "A"]},
            {"project": "*", "environments": "*", "actions": ["read"], "deny": True},
        ]
    )
    ctx = RequestContext("req-2", "GET", "/v1/x", "10.0.0.1", "ua", environment="prod", secret_name="K")
    ctx.actor = Actor(7, "service", "deployer", 9, "acc", scopes)
    event = shape(ctx, outcome="ok", status=200, now=WHEN)
    assert type(event["scopes"]) is CanonicalJson
    assert link_hash(event, seq=8, prev_hash=HEAD) == reference(event, 8, HEAD)
    read_back = {**event, "scopes": str(event["scopes"])}
    assert link_hash(read_back, seq=8, prev_hash=HEAD) == reference(event, 8, HEAD)
