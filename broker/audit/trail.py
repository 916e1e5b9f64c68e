"""The audit trail's per-process state: keys, sinks, checkpoint settings, the chainer's wake-up, counters."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.audit.checkpoint import Signer
from broker.audit.signing import checkpoint_dir, load_signer
from broker.audit.sinks import CheckpointDirectory, EventSink, FileSink, SinkError, SyslogSink
from broker.config import Settings
from broker.errors import Invalid


@dataclass
class SinkHealth:
    """What this process knows about one sink."""

    name: str
    ok: bool = True
    failures: int = 0
    last_error: str | None = None
    reported_at: float | None = None  # monotonic time of the last failure event for this sink


@dataclass
class AuditTrail:
    """Everything the audit service needs besides the database; built once by the composition root."""

    audit_key: bytes
    signer: Signer
    checkpoints: CheckpointDirectory
    sinks: list[EventSink]
    checkpoint_every: int
    checkpoint_interval: float
    on_rollback: str
    retention: timedelta | None = None
    # Set at start-up when the database is behind the last checkpoint and the broker serves read-only.
    read_only: str | None = None
    # Chain state as this process last saw it (the database is the truth; these only decide when to wake).
    head_seq: int = 0
    checkpoint_seq: int = 0
    published_seq: int = 0
    # When this process first looked at checkpoints: the age of the chain before its first checkpoint.
    started_at: datetime | None = None
    last_time: datetime | None = None
    counters: Counter[str] = field(default_factory=Counter)
    health: dict[str, SinkHealth] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock | None = None
    _lock_loop: asyncio.AbstractEventLoop | None = None

    def sink_health(self, name: str) -> SinkHealth:
        """The health record of a sink (created on first use)."""
        return self.health.setdefault(name, SinkHealth(name))

    def chain_lock(self) -> asyncio.Lock:
        """One chain pass at a time in this process (the database lock orders processes)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def clock_step(self, now: datetime, tolerance: timedelta = timedelta(seconds=1)) -> timedelta | None:
        """How far the wall clock stepped back since the last event, if more than `tolerance`."""
        last = self.last_time
        if last is None or now >= last:
            self.last_time = now
            return None
        if last - now > tolerance:
            self.last_time = now
            return last - now
        return None

    def kick(self, *, inline: bool) -> None:
        """Wake the chainer: always when events wait to be linked; with inline linking only when a
        checkpoint is due by count."""
        if self._wake is None:
            return
        if inline and self.head_seq - self.checkpoint_seq < self.checkpoint_every:
            return
        self._wake.set()


def from_settings(settings: Settings, *, audit_key: bytes) -> tuple[AuditTrail, bool]:
    """The trail for these settings and whether a development signing key was just created."""
    signer, created = load_signer(settings)
    sinks: list[EventSink] = []
    try:
        if settings.audit_file is not None:
            sinks.append(FileSink(settings.audit_file, timeout=settings.audit_sink_timeout))
        if settings.audit_syslog is not None:
            sinks.append(SyslogSink(settings.audit_syslog, timeout=settings.audit_sink_timeout))
    except SinkError as exc:
        raise Invalid(str(exc), field="audit_syslog") from None
    trail = AuditTrail(
        audit_key=audit_key,
        signer=signer,
        checkpoints=CheckpointDirectory(checkpoint_dir(settings)),
        sinks=sinks,
        checkpoint_every=settings.audit_checkpoint_every,
        checkpoint_interval=float(settings.audit_checkpoint_interval),
        on_rollback=settings.audit_on_rollback,
        retention=timedelta(days=settings.audit_retention_days) if settings.audit_retention_days else None,
    )
    return trail, created
