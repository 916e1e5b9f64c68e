"""Start-up (sinks checked, the database compared with the newest external checkpoint) and the background
chainer that links, checkpoints, publishes and prunes until the broker stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.sinks import SinkError, describe
from broker.errors import Unavailable
from broker.services.audit.chaining import chain, rollback_problem, trusted_series
from broker.services.audit.retention import prune
from broker.services.audit.writing import record_system
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")


def _setting_of(sink: object) -> str:
    name = str(getattr(sink, "name", ""))
    return "STRONGROOM_AUDIT_SYSLOG" if name.startswith("syslog:") else "STRONGROOM_AUDIT_FILE"


def check_outputs(rt: Runtime) -> None:
    """The checkpoint directory and every extra sink can be written (`serve` asks before the server starts,
    start-up again); Unavailable as one sentence naming the setting otherwise."""
    trail = rt.audit
    try:
        trail.checkpoints.ensure(trail.signer.public)
    except (OSError, SinkError) as exc:
        raise Unavailable(
            f"STRONGROOM_AUDIT_CHECKPOINT_DIR: {trail.checkpoints.path} cannot hold checkpoints: {describe(exc)}"
        ) from None
    for sink in trail.sinks:
        check = getattr(sink, "check", None)
        if check is None:
            continue
        try:
            check()
        except (OSError, SinkError) as exc:
            raise Unavailable(f"{_setting_of(sink)}: {describe(exc)}") from None


async def _problem(rt: Runtime) -> tuple[str | None, SignedCheckpoint | None]:
    """Link what is pending, then why the database is not the one the external checkpoints vouch for
    (None: it is), and the newest checkpoint."""
    trail = rt.audit
    await asyncio.to_thread(check_outputs, rt)
    try:
        published = await asyncio.to_thread(trail.checkpoints.between, 0, None)
        markers = await asyncio.to_thread(trail.checkpoints.markers)
    except (OSError, SinkError) as exc:
        raise Unavailable(f"STRONGROOM_AUDIT_CHECKPOINT_DIR: {describe(exc)}") from None
    # Accepted restores (strongroom-server audit accept-restore) set aside the checkpoints they superseded.
    published, problem = trusted_series(rt, published, markers)
    latest = published[-1] if published else None
    await chain(rt, checkpoints=False)
    if problem is not None:
        return problem, latest
    return await rollback_problem(rt, latest, markers[-1] if markers else None), latest


def _refusal(problem: str) -> Unavailable:
    return Unavailable(
        f"audit: {problem}; refusing to serve (set STRONGROOM_AUDIT_ON_ROLLBACK=read-only to serve "
        "reads only while you investigate)"
    )


async def check_before_serving(rt: Runtime) -> None:
    """`serve`'s check before the server starts (start-up makes it again): the audit outputs can be used,
    and the database is not behind the external checkpoints unless read-only serving is configured."""
    problem, _ = await _problem(rt)
    if problem is not None and rt.audit.on_rollback == "refuse":
        raise _refusal(problem)


async def start(rt: Runtime) -> None:
    """Start-up: check the sinks, link what is pending, compare the database with the newest external
    checkpoint (refuse, or serve read-only, when it is behind), then start the chainer."""
    trail = rt.audit
    problem, latest = await _problem(rt)
    if problem is not None:
        if trail.on_rollback == "refuse":
            raise _refusal(problem)
        trail.read_only = problem
        log.error("audit: %s; serving read-only: every change is refused with 503", problem)
        await record_system(rt, "audit.rollback_detected", outcome="error", reason=problem)
    trail.published_seq = latest.seq if latest is not None else 0
    trail._wake = asyncio.Event()
    trail._task = asyncio.create_task(_run(rt), name="strongroom-audit-chainer")


async def stop(rt: Runtime) -> None:
    """Stop the chainer after a last pass, and the sinks' threads."""
    trail = rt.audit
    task, trail._task, trail._wake = trail._task, None, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await chain(rt)
    for sink in trail.sinks:
        await asyncio.to_thread(sink.close)


# After a pass skipped because another process held the chain lock, the next try comes this soon: that
# process may have read its backlog before this one's last events committed.
RETRY_AFTER_SKIP = 0.05
# The least time from the start of one background pass to the start of the next. Every request kicks the
# chainer on PostgreSQL; passes run back to back would each link the one or two events committed during
# the last, paying the pass's round trips (lock, head, backlog, link, keys, checkpoint) per event. Spaced,
# a pass links what a busy broker committed meanwhile. Requests never wait for the chain, and every list,
# export and verify links synchronously first, so this only delays the background linking.
PASS_SPACING = 0.05


async def _run(rt: Runtime) -> None:
    trail = rt.audit
    last_prune = 0.0
    skipped = False
    while True:
        wake = trail._wake
        if wake is None:
            return
        with contextlib.suppress(TimeoutError):
            timeout = RETRY_AFTER_SKIP if skipped else trail.checkpoint_interval
            await asyncio.wait_for(wake.wait(), timeout=timeout)
        wake.clear()
        began = time.monotonic()
        try:
            skipped = (await chain(rt, wait=False)).skipped
            if trail.retention is not None and time.monotonic() - last_prune >= 3600:
                last_prune = time.monotonic()
                await prune(rt, older_than=trail.retention)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the chainer must survive a database outage
            trail.counters["chain_failures"] += 1
            log.error("audit chainer pass failed (%s); retrying", describe(exc))
            await asyncio.sleep(1.0)  # back off: the database is probably down
            continue
        if not skipped and (rest := PASS_SPACING - (time.monotonic() - began)) > 0:
            await asyncio.sleep(rest)
