"""Retention: events older than a published checkpoint are pruned, and that checkpoint anchors the rest."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from broker.audit.canonical import format_time
from broker.repositories import audit as audit_repo
from broker.services.audit.chaining import chain
from broker.services.audit.events import system_event
from broker.services.audit.writing import write_events
from broker.services.runtime import Runtime


async def prune(rt: Runtime, *, older_than: timedelta) -> tuple[int, int | None]:
    """Delete events older than the newest published checkpoint signed before now - older_than.

    The checkpoint stays as the anchor the rest of the chain starts from, so it remains verifiable.
    Returns (events deleted, anchor seq).
    """
    await chain(rt)
    trail = rt.audit
    async with rt.engine.begin() as conn:
        await audit_repo.lock_chain(conn)
        anchor = await audit_repo.prune_anchor(conn, rt.clock() - older_than)
        if anchor is None or anchor.seq <= 0:
            return 0, None
        published = await asyncio.to_thread(trail.checkpoints.between, int(anchor.seq), int(anchor.seq))
        if not published:
            return 0, None
        gone = await audit_repo.prune_through(conn, int(anchor.seq))
        if gone:
            reason = (
                f"pruned {gone} events up to seq {anchor.seq} (older than {older_than.days} days); the chain "
                f"now starts from the checkpoint signed at {format_time(anchor.signed_at)}"
            )
            await write_events(conn, rt, [system_event("audit.prune", now=rt.clock(), reason=reason)])
    return gone, int(anchor.seq)
