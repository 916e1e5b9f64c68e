"""The auditor's searches: who may audit what, the filters of `audit list`, and the fingerprint search."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.fingerprint import fingerprint, is_fingerprint
from broker.domain.request import Actor, RequestContext, ValueSeen
from broker.domain.scopes import Action, allowed
from broker.errors import Forbidden, Invalid, RateLimited
from broker.repositories import audit as audit_repo
from broker.services.audit.chaining import chain
from broker.services.audit.events import BATCH, OUTCOMES, to_record
from broker.services.audit.writing import record
from broker.services.runtime import Runtime

_AGE = re.compile(r"(\d{1,7})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str | None, *, now: datetime, field: str) -> datetime | None:
    """An ISO 8601 date or time (naive means UTC), or an age such as 90d, 12h, 30m (by the server's clock)."""
    if text is None or text == "":
        return None
    if (m := _AGE.fullmatch(text)) is not None:
        return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise Invalid(
            f"{field}: must be an ISO 8601 date or time, or an age such as 90d, 12h or 30m", field=field
        )
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _audit_grants(actor: Actor) -> list[Any]:
    return [s for s in actor.scopes if not s.deny and Action.AUDIT in s.actions]


def is_auditor(actor: Actor) -> bool:
    """Whether the token holds any audit grant (what each audit answer then narrows to what it may see)."""
    return bool(_audit_grants(actor))


def require_auditor(ctx: RequestContext, actor: Actor, action: str) -> None:
    """Name the request and refuse a token that holds no audit grant at all."""
    ctx.about(action)
    if not is_auditor(actor):
        raise Forbidden("this token does not grant audit")


def _can_see(actor: Actor, project: str | None, environment: str | None) -> bool:
    return allowed(actor.scopes, Action.AUDIT, project, environment)


def full_auditor(actor: Actor) -> bool:
    """Whether the token may audit every project and environment (and is denied none)."""
    full = any(s.project == "*" and s.environments == "*" for s in _audit_grants(actor))
    denied = any(s.deny and Action.AUDIT in s.actions for s in actor.scopes)
    return full and not denied


@dataclass
class EventQuery:
    """Filters for listing events; every one is optional."""

    actor: str | None = None
    accessor: str | None = None
    project: str | None = None
    environment: str | None = None
    name: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    cursor: int | None = None
    limit: int = 50
    oldest_first: bool = False


@dataclass
class EventPage:
    """A page of events (records with their hash), the cursor of the next page and the head."""

    events: list[dict[str, Any]]
    next_cursor: int | None
    head_seq: int
    head_hash: str | None = None
    scanned: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _conditions(q: EventQuery, now: datetime) -> tuple[list[Any], Network | None]:
    col = audit_repo.column
    where: list[Any] = []
    for key, column_name, limit in (
        ("actor", "actor_name", 128),
        ("accessor", "token_accessor", 64),
        ("project", "project", 64),
        ("environment", "environment", 64),
        ("name", "secret_name", 256),
    ):
        value = getattr(q, key)
        if value is not None:
            if len(value) > limit:
                raise Invalid(f"{key}: at most {limit} characters", field=key)
            # With a name, project and environment narrow the key index instead (see key_filter).
            if q.name is None or key in ("actor", "accessor"):
                where.append(col(column_name) == value)
    if q.action is not None:
        if not re.fullmatch(r"[a-z0-9._-]{1,64}\*?", q.action):
            raise Invalid(
                "action: an action name such as secret.read, a family such as secret, or a prefix such as "
                "secret.*",
                field="action",
            )
        if q.action.endswith("*"):
            where.append(col("action").startswith(q.action[:-1], autoescape=True))
        elif "." not in q.action:
            # A family name as people type it (`deploy`): its actions (deploy.*), and one so named if any.
            where.append(
                or_(col("action") == q.action, col("action").startswith(q.action + ".", autoescape=True))
            )
        else:
            where.append(col("action") == q.action)
    if q.outcome is not None:
        if q.outcome not in OUTCOMES:
            raise Invalid("outcome: must be one of ok, denied, invalid, error", field="outcome")
        where.append(col("outcome") == q.outcome)
    since = parse_when(q.since, now=now, field="since")
    until = parse_when(q.until, now=now, field="until")
    if since is not None:
        where.append(col("occurred_at") >= since)
    if until is not None:
        where.append(col("occurred_at") < until)
    network: Network | None = None
    if q.source is not None:
        try:
            network = ipaddress.ip_network(q.source, strict=False)
        except ValueError:
            raise Invalid("source: must be an IP address or a CIDR block", field="source") from None
        if network.num_addresses == 1:
            where.append(col("source_addr") == str(network.network_address))
            network = None
        elif (narrow := _cidr_prefix(network)) is not None:
            where.append(narrow)
    if q.fingerprint is not None:
        if not is_fingerprint(q.fingerprint):
            raise Invalid("fingerprint: must be hmac-sha256: and 64 hex digits", field="fingerprint")
        where.append(col("fingerprints").contains(q.fingerprint, autoescape=True))
    return where, network


def _cidr_prefix(network: Network) -> Any:
    """A condition every address of the block satisfies as text, so SQL, not Python row by row, drops the
    rest; `_visible_row` still checks the block exactly. Python accepts only canonical dotted decimal as
    an IPv4 address, and no IPv6 address without a colon, so a row this drops could never pass that check.
    IPv4 blocks of /8 to /31 are narrowed to their own addresses; IPv6 ones only to IPv6 addresses."""
    col = audit_repo.column("source_addr")
    if network.version == 6:
        return col.contains(":", autoescape=True)
    if network.prefixlen < 8:
        return None
    octets = [int(o) for o in str(network.network_address).split(".")]
    whole, rest = divmod(network.prefixlen, 8)
    if whole == 3 and rest:  # a /25../31: its few addresses, exactly
        return col.in_([str(address) for address in network])
    fixed = "".join(f"{o}." for o in octets[:whole])
    if not rest:
        return col.startswith(fixed, autoescape=True)
    # The partly fixed octet takes at most 128 values: one prefix each.
    first = octets[whole]
    return or_(
        *(col.startswith(f"{fixed}{v}.", autoescape=True) for v in range(first, first + 2 ** (8 - rest)))
    )


def key_filter(q: EventQuery) -> audit_repo.KeyFilter | None:
    """`--name` (with `--project`, `--environment`) as a filter on the key index: every event that
    touched the key, by any route (single read, reveal, resolve, export, compile, deploy bundle, named
    values), in the environment where it lives or through the environment the request named."""
    if q.name is None:
        return None
    return audit_repo.KeyFilter(q.name, q.project, q.environment)


def _visible_row(actor: Actor, row: Any, network: Network | None) -> bool:
    if not _can_see(actor, row.project, row.environment):
        return False
    if network is None:
        return True
    try:
        return ipaddress.ip_address(row.source_addr or "") in network
    except ValueError:
        return False


async def _search(
    conn: AsyncConnection, actor: Actor, where: list[Any], network: Network | None, q: EventQuery, cap: int
) -> tuple[list[dict[str, Any]], int | None, int]:
    grants = _audit_grants(actor)
    if all(s.project != "*" for s in grants):
        # Narrow in SQL to the projects the token may audit; the exact rule (globs, denies) runs below.
        where = [*where, audit_repo.column("project").in_(sorted({s.project for s in grants}))]
    found: list[dict[str, Any]] = []
    cursor, scanned = q.cursor, 0
    key = key_filter(q)
    while len(found) < q.limit and scanned < cap:
        rows = await audit_repo.search(
            conn,
            where,
            key=key,
            cursor=cursor,
            newest_first=not q.oldest_first,
            limit=min(BATCH, 2 * q.limit),
        )
        for row in rows:
            scanned += 1
            if int(row.seq) == cursor:
                continue  # the same event through a second environment (key_filter)
            cursor = int(row.seq)
            if _visible_row(actor, row, network):
                found.append(to_record(row))
                if len(found) == q.limit:
                    break
        if len(rows) < min(BATCH, 2 * q.limit):
            return found, (cursor if len(found) == q.limit else None), scanned
    return found, cursor, scanned


async def list_events(rt: Runtime, ctx: RequestContext, actor: Actor, q: EventQuery) -> EventPage:
    """Events the token may audit, filtered and paged by sequence (newest first unless asked)."""
    if not 1 <= q.limit <= 500:
        raise Invalid("limit: must be between 1 and 500", field="limit")
    where, network = _conditions(q, rt.clock())
    return await _page(rt, ctx, actor, where, network, q, cap=20 * BATCH)


async def fingerprint_search(rt: Runtime, ctx: RequestContext, actor: Actor, *, value: str) -> EventPage:
    """The fingerprint of a candidate value and the events (that the token may audit) that served or
    wrote exactly that value, newest first. Rate limited; the candidate's fingerprint is itself audited."""
    wait = await rt.fingerprint_limiter.take([f"accessor:{actor.accessor}", f"addr:{ctx.source_addr}"])
    if wait:
        raise RateLimited("too many fingerprint look-ups; retry later", retry_after=wait)
    digest = fingerprint(rt.keys.audit_key, value)
    ctx.values.append(ValueSeen(None, None, None, digest))
    q = EventQuery(fingerprint=digest, limit=100)
    where, _ = _conditions(q, rt.clock())
    where.append(audit_repo.column("action") != "audit.fingerprint")
    page = await _page(rt, ctx, actor, where, None, q, cap=1_000_000)
    page.extra["fingerprint"] = digest
    return page


async def _page(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    where: list[Any],
    network: Network | None,
    q: EventQuery,
    *,
    cap: int,
) -> EventPage:
    """Link what is pending; then, in one transaction, a page of the events the token may see, the head
    and the request's own event."""
    await chain(rt)
    async with rt.engine.begin() as conn:
        found, cursor, scanned = await _search(conn, actor, where, network, q, cap)
        head_seq, head_hash = await audit_repo.head(conn)
        await record(conn, rt, ctx)
    return EventPage(found, cursor, head_seq, head_hash, scanned)
