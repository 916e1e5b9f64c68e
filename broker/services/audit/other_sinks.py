"""The sinks besides the database (a JSON-lines file, syslog): writing to them, and the health of every
sink: failures counted, logged and recorded at most once a minute per sink, recoveries recorded."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from broker.audit import canonical
from broker.audit.sinks import describe
from broker.services.audit.events import system_event, to_record
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")

FAILURE_REPORT_EVERY = 60.0  # seconds between audit.sink_failure events for one failing sink


async def write(
    rt: Runtime, events: Sequence[dict[str, Any]]
) -> tuple[int, list[tuple[str, BaseException]], list[str]]:
    """Write events to every sink besides the database: (how many recorded them, failures, recoveries)."""
    trail = rt.audit
    data = b"".join(canonical.line(to_record(event)) for event in events)
    recorded = 0
    failures: list[tuple[str, BaseException]] = []
    recovered: list[str] = []
    for sink in trail.sinks:
        try:
            await sink.write(data)
        except Exception as exc:  # any failure of a sink is reported, never raised past here
            failures.append((sink.name, exc))
        else:
            recorded += 1
            if not trail.sink_health(sink.name).ok:
                recovered.append(sink.name)
    return recorded, failures, recovered


def note_health(
    rt: Runtime, failures: Sequence[tuple[str, BaseException]], recovered: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    """Count and log sink failures and recoveries; the events to record about them (a failing sink's at
    most once a minute)."""
    trail = rt.audit
    notes = []
    mono = time.monotonic()
    for name, exc in failures:
        health = trail.sink_health(name)
        why = describe(exc)
        health.ok, health.failures, health.last_error = False, health.failures + 1, why
        trail.counters[f"sink_failures:{name}"] += 1
        log.error("audit sink %s failed: %s", name, why)
        if health.reported_at is None or mono - health.reported_at >= FAILURE_REPORT_EVERY:
            health.reported_at = mono
            notes.append(
                system_event("audit.sink_failure", now=now, outcome="error", reason=f"{name}: {why}")
            )
    for name in recovered:
        health = trail.sink_health(name)
        health.ok, health.reported_at = True, None
        log.warning("audit sink %s works again", name)
        notes.append(system_event("audit.sink_recovered", now=now, reason=f"{name} records events again"))
    return notes


async def write_quietly(rt: Runtime, events: Sequence[dict[str, Any]], *, skip: set[str]) -> None:
    """Write events to the other sinks not in `skip`, ignoring failures (best effort, for health notes)."""
    data = b"".join(canonical.line(to_record(n)) for n in events)
    for sink in rt.audit.sinks:
        if sink.name not in skip:
            with contextlib.suppress(Exception):
                await sink.write(data)
