"""Audit event and checkpoint rows: insert, link into the chain, page through, prune (Core, never commit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.db.units import Statement, Tx
from broker.models import audit_checkpoints, audit_event_keys, audit_events

# pg_advisory_xact_lock key of the chainer: "SRAUDIT1" as a 64-bit integer.
CHAIN_LOCK_KEY = int.from_bytes(b"SRAUDIT1", "big") & 0x7FFF_FFFF_FFFF_FFFF

# Columns that make up a record (the chain columns apart), selected for linking, listing and export.
RECORD_COLUMNS = [
    audit_events.c.seq,
    audit_events.c.prev_hash,
    audit_events.c.hash,
    audit_events.c.occurred_at,
    audit_events.c.request_id,
    audit_events.c.actor_id,
    audit_events.c.actor_type,
    audit_events.c.actor_name,
    audit_events.c.token_accessor,
    audit_events.c.scopes,
    audit_events.c.source_addr,
    audit_events.c.user_agent,
    audit_events.c.client_kind,
    audit_events.c.method,
    audit_events.c.route,
    audit_events.c.action,
    audit_events.c.project,
    audit_events.c.environment,
    audit_events.c.secret_name,
    audit_events.c.version,
    audit_events.c.fingerprints,
    audit_events.c.backend,
    audit_events.c.upstream_path,
    audit_events.c.upstream_version,
    audit_events.c.outcome,
    audit_events.c.status,
    audit_events.c.reason,
]


# (project, environment, name) of a key an event touched; "" for a project or environment it has not.
TouchedKey = tuple[str, str, str]


# Every column of an event but its id; absent keys are NULL.
EVENT_COLUMNS = tuple(c.name for c in audit_events.c if c.name != "id")


def _event_insert() -> Insert:
    return insert(audit_events).values({name: bindparam(name) for name in EVENT_COLUMNS})


HEAD = Statement(
    lambda: (
        select(audit_events.c.seq, audit_events.c.hash)
        .where(audit_events.c.seq.is_not(None))
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    )
)
# The event, linked (SQLite: it is linked at once, in the same transaction as its key rows).
APPEND_EVENT = Statement(_event_insert)
# PostgreSQL: the event alone, unlinked (a plain insert, so concurrent units' events go in one group);
# its key rows are written by the chainer when it links it (`link_keys`).
APPEND_UNLINKED = Statement(lambda: _event_insert().inline())
# A key row of the linked event `seq`, found by its unique seq (no id returned to the caller and sent back).
APPEND_KEY = Statement(
    lambda: insert(audit_event_keys).values(
        event_id=select(audit_events.c.id).where(audit_events.c.seq == bindparam("seq")).scalar_subquery(),
        seq=bindparam("seq"),
        project=bindparam("project"),
        environment=bindparam("environment"),
        name=bindparam("name"),
    )
)


async def append(tx: Tx, event: Mapping[str, Any], keys: Sequence[TouchedKey] = ()) -> None:
    """Insert one event (column values, already shaped by the audit service; never a value), in the
    unit's transaction. A linked event (with its seq) gets the keys it touched (the index of
    `audit list --name`) in the same transaction; an unlinked one gets them when the chainer links it."""
    seq = event.get("seq")
    if seq is None:
        await tx.append(APPEND_UNLINKED, event)
        return
    await tx.execute(APPEND_EVENT, event)
    if len(keys) == 1:  # a read's one key: a plain statement is cheaper than a batch of one
        p, e, n = keys[0]
        await tx.execute(APPEND_KEY, {"seq": seq, "project": p, "environment": e, "name": n})
    elif keys:
        await tx.execute_many(
            APPEND_KEY, [{"seq": seq, "project": p, "environment": e, "name": n} for p, e, n in keys]
        )


async def head_of(tx: Tx) -> tuple[int, str | None]:
    """(seq, hash) of the newest linked event, or (0, None) for an empty chain."""
    row = await tx.one(HEAD, {})
    return (int(row[0]), row[1]) if row is not None else (0, None)


async def lock_chain(conn: AsyncConnection) -> None:
    """Make this transaction the only chainer: an advisory lock on PostgreSQL (released at commit).

    SQLite needs nothing: every transaction begins IMMEDIATE, which already holds the one write lock.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})


async def try_lock_chain(conn: AsyncConnection) -> bool:
    """Take the chain lock if no other transaction holds it (released at commit); False at once if one does.

    SQLite: True (the transaction's IMMEDIATE begin already holds the one write lock).
    """
    if conn.dialect.name != "postgresql":
        return True
    result = await conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
    return bool(result.scalar_one())


async def head(conn: AsyncConnection) -> tuple[int, str | None]:
    """(seq, hash) of the newest linked event, or (0, None) for an empty chain."""
    row = (
        await conn.execute(
            select(audit_events.c.seq, audit_events.c.hash)
            .where(audit_events.c.seq.is_not(None))
            .order_by(audit_events.c.seq.desc())
            .limit(1)
        )
    ).first()
    return (int(row[0]), row[1]) if row is not None else (0, None)


def pending_statement(*, limit: int) -> Select[Any]:
    """The select behind `pending` (apart for EXPLAIN in tests)."""
    return (
        select(audit_events.c.id, *RECORD_COLUMNS)
        .where(audit_events.c.seq.is_(None))
        .order_by(audit_events.c.id)
        .limit(limit)
    )


async def pending(conn: AsyncConnection, *, limit: int) -> list[DbRow]:
    """Committed events not linked yet, oldest id first: (id, *RECORD_COLUMNS).

    Read through the partial index ix_audit_events_unlinked, so a pass costs its own size, not the
    length of the linked history.
    """
    return list((await conn.execute(pending_statement(limit=limit))).all())


async def count_pending(conn: AsyncConnection) -> int:
    """How many committed events wait to be linked."""
    result = await conn.execute(
        select(func.count()).select_from(audit_events).where(audit_events.c.seq.is_(None))
    )
    return int(result.scalar_one())


# One statement links a whole pass on PostgreSQL: a statement run once per event is prepared, and after
# five runs PostgreSQL's generic plan looks the id up among every unlinked event (a cost that grows with
# the backlog); joining the arrays keeps one plan and one round trip whatever the pass holds.
_LINK_PG = text(
    "UPDATE audit_events AS e SET seq = u.seq, prev_hash = u.prev_hash, hash = u.hash "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), CAST(:prevs AS varchar[]), "
    "CAST(:hashes AS varchar[])) AS u(id, seq, prev_hash, hash) "
    "WHERE e.id = u.id AND e.seq IS NULL"
)
_LINK_KEYS_PG = text(
    "INSERT INTO audit_event_keys (event_id, seq, project, environment, name) "
    "SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), CAST(:projects AS varchar[]), "
    "CAST(:environments AS varchar[]), CAST(:names AS varchar[]))"
)


async def link(conn: AsyncConnection, links: Sequence[tuple[int, int, str, str]]) -> None:
    """Give events (id, seq, prev_hash, hash), in one statement on PostgreSQL; an event someone else
    linked meanwhile is left alone and the pass fails (the caller holds the chain lock, and `seq` is
    unique, so this is belt and braces)."""
    if not links:
        return
    if conn.dialect.name == "postgresql":
        ids, seqs, prevs, hashes = (list(column) for column in zip(*links, strict=True))
        result = await conn.execute(_LINK_PG, {"ids": ids, "seqs": seqs, "prevs": prevs, "hashes": hashes})
        done = result.rowcount
    else:
        # SQLite has no generic-plan trap and no round trip: one cached statement per event is cheapest.
        stmt = (
            update(audit_events)
            .where(audit_events.c.id == bindparam("event_id"), audit_events.c.seq.is_(None))
            .values(seq=bindparam("new_seq"), prev_hash=bindparam("new_prev"), hash=bindparam("new_hash"))
        )
        params = [{"event_id": i, "new_seq": s, "new_prev": p, "new_hash": h} for i, s, p, h in links]
        result = await conn.execute(stmt, params)
        done = result.rowcount if conn.dialect.supports_sane_multi_rowcount else len(links)
    if done != len(links):
        raise RuntimeError("audit chain: an event was linked by someone else during this pass")


async def link_keys(conn: AsyncConnection, rows: Sequence[tuple[int, int, TouchedKey]]) -> None:
    """Write the key rows (event id, seq, key) of events this transaction links (one statement on
    PostgreSQL)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _LINK_KEYS_PG,
            {
                "ids": [i for i, _, _ in rows],
                "seqs": [s for _, s, _ in rows],
                "projects": [k[0] for _, _, k in rows],
                "environments": [k[1] for _, _, k in rows],
                "names": [k[2] for _, _, k in rows],
            },
        )
        return
    await conn.execute(
        insert(audit_event_keys),
        [{"event_id": i, "seq": s, "project": p, "environment": e, "name": n} for i, s, (p, e, n) in rows],
    )


async def events_between(conn: AsyncConnection, low: int, high: int, *, limit: int) -> list[DbRow]:
    """Linked events low <= seq <= high in sequence order (RECORD_COLUMNS), at most `limit`."""
    result = await conn.execute(
        select(*RECORD_COLUMNS)
        .where(audit_events.c.seq >= low, audit_events.c.seq <= high)
        .order_by(audit_events.c.seq)
        .limit(limit)
    )
    return list(result.all())


async def event_at(conn: AsyncConnection, seq: int) -> DbRow | None:
    """The linked event at `seq` (RECORD_COLUMNS), or None."""
    return (await conn.execute(select(*RECORD_COLUMNS).where(audit_events.c.seq == seq))).first()


async def first_seq(conn: AsyncConnection) -> int:
    """The lowest linked sequence number still held (after a prune, above 1); 0 when empty."""
    return int((await conn.execute(select(func.min(audit_events.c.seq)))).scalar() or 0)


async def seq_range(
    conn: AsyncConnection, since: datetime | None, until: datetime | None
) -> tuple[int | None, int | None]:
    """The smallest seq at or after `since` and the largest before `until` (None when there is none).

    Exporting every record between the two (a contiguous, verifiable stretch) covers every event of the
    time range; events are linked in commit order, so a few just outside it may ride along at the edges.
    """
    low_q = select(func.min(audit_events.c.seq)).where(audit_events.c.seq.is_not(None))
    high_q = select(func.max(audit_events.c.seq)).where(audit_events.c.seq.is_not(None))
    if since is not None:
        low_q = low_q.where(audit_events.c.occurred_at >= since)
    if until is not None:
        high_q = high_q.where(audit_events.c.occurred_at < until)
    low = (await conn.execute(low_q)).scalar()
    high = (await conn.execute(high_q)).scalar()
    return (int(low) if low is not None else None, int(high) if high is not None else None)


@dataclass(frozen=True)
class KeyFilter:
    """Events that touched key `name` (in `project`, and in or through `environment`, when given)."""

    name: str
    project: str | None = None
    environment: str | None = None


def search_statement(
    conditions: Sequence[ColumnElement[bool]],
    *,
    key: KeyFilter | None,
    cursor: int | None,
    newest_first: bool,
    limit: int,
) -> Select[Any]:
    """The select behind `search` (apart for EXPLAIN in tests).

    With a key, the page walks the key index (name, seq) in sequence order and joins each event by id,
    so a page costs its own size however long the trail; an event that touched the key through two
    environments comes twice, next to each other (the caller drops the second).
    """
    if key is None:
        seq = audit_events.c.seq
        where = [seq.is_not(None), *conditions]
        query = select(*RECORD_COLUMNS)
    else:
        seq = audit_event_keys.c.seq
        where = [audit_event_keys.c.name == key.name, seq.is_not(None), *conditions]
        if key.project is not None:
            where.append(audit_event_keys.c.project == key.project)
        if key.environment is not None:
            where.append(audit_event_keys.c.environment == key.environment)
        query = select(*RECORD_COLUMNS).select_from(
            audit_event_keys.join(audit_events, audit_events.c.id == audit_event_keys.c.event_id)
        )
    if cursor is not None:
        where.append(seq < cursor if newest_first else seq > cursor)
    return query.where(*where).order_by(seq.desc() if newest_first else seq).limit(limit)


async def search(
    conn: AsyncConnection,
    conditions: Sequence[ColumnElement[bool]],
    *,
    key: KeyFilter | None = None,
    cursor: int | None,
    newest_first: bool,
    limit: int,
) -> list[DbRow]:
    """Linked events matching every condition (and touching `key`), a page in sequence order after
    `cursor` (RECORD_COLUMNS)."""
    stmt = search_statement(conditions, key=key, cursor=cursor, newest_first=newest_first, limit=limit)
    return list((await conn.execute(stmt)).all())


def column(name: str) -> Any:
    """An audit_events column by name (for the service's filters)."""
    return audit_events.c[name]


# ---- checkpoints ---------------------------------------------------------------------------------


async def last_checkpoint(conn: AsyncConnection) -> DbRow | None:
    """(seq, head, signed_at, key_id, document) of the newest checkpoint, or None."""
    result = await conn.execute(
        select(
            audit_checkpoints.c.seq,
            audit_checkpoints.c.head,
            audit_checkpoints.c.signed_at,
            audit_checkpoints.c.key_id,
            audit_checkpoints.c.document,
        )
        .order_by(audit_checkpoints.c.seq.desc())
        .limit(1)
    )
    return result.first()


async def add_checkpoint(
    conn: AsyncConnection, *, seq: int, head: str, signed_at: datetime, key_id: str, document: str
) -> None:
    """Insert a checkpoint row."""
    await conn.execute(
        insert(audit_checkpoints).values(
            seq=seq, head=head, signed_at=signed_at, key_id=key_id, document=document
        )
    )


async def checkpoint_documents(conn: AsyncConnection, low: int, high: int | None) -> list[str]:
    """Documents of the checkpoints with low <= seq <= high (no bound when high is None), oldest first."""
    q = select(audit_checkpoints.c.document).where(audit_checkpoints.c.seq >= low)
    if high is not None:
        q = q.where(audit_checkpoints.c.seq <= high)
    result = await conn.execute(q.order_by(audit_checkpoints.c.seq))
    return [row[0] for row in result.all()]


async def prune_anchor(conn: AsyncConnection, before: datetime) -> DbRow | None:
    """(seq, head, signed_at) of the newest checkpoint signed before `before`: where a prune may cut."""
    result = await conn.execute(
        select(audit_checkpoints.c.seq, audit_checkpoints.c.head, audit_checkpoints.c.signed_at)
        .where(audit_checkpoints.c.signed_at < before)
        .order_by(audit_checkpoints.c.seq.desc())
        .limit(1)
    )
    return result.first()


async def prune_through(conn: AsyncConnection, seq: int) -> int:
    """Delete events up to and including `seq` and the checkpoints before it (the one at `seq` stays as
    the anchor the remaining chain starts from); returns how many events went."""
    # The key table is keyed by name first: this scans it, as rarely as prunes run.
    await conn.execute(delete(audit_event_keys).where(audit_event_keys.c.seq <= seq))
    gone = await conn.execute(delete(audit_events).where(audit_events.c.seq <= seq))
    await conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.seq < seq))
    return int(gone.rowcount)


def unlinked_after(source: Any, *, always: int) -> Insert:
    """One insert of `always` + 1 unlinked events (values bound as `e<i>_<column>`, see `bound_events`):
    the first `always` whatever happens, the last only when `source` (a data-modifying CTE of the caller's
    statement) returned a row. PostgreSQL runs the whole statement atomically, so a change and its event
    commit together in a single statement that needs no transaction block."""

    def row(i: int) -> Select[Any]:
        return select(*(bindparam(f"e{i}_{name}", type_=audit_events.c[name].type) for name in EVENT_COLUMNS))

    rows = [row(i) for i in range(always)] + [row(always).select_from(source)]
    selected = rows[0].union_all(*rows[1:]) if always else rows[0]
    return insert(audit_events).from_select(list(EVENT_COLUMNS), selected)


def bound_events(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Events (column values, as `append` takes them) as the bound values of an `unlinked_after` insert."""
    return {f"e{i}_{name}": value for i, event in enumerate(events) for name, value in event.items()}
