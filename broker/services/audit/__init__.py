"""Audit: one event per request, in the transaction of the change, before any value leaves; the hash
chain, signed checkpoints, the start-up rollback check, and the auditor's queries and exports.

By concern: events.py (an event's shape and canonical record), writing.py (recording events in the
caller's transaction), other_sinks.py (the sinks besides the database and every sink's health),
chaining.py (linking, checkpoints, publishing, verification), runner.py (start-up and the background
chainer), retention.py (pruning), search.py (who may audit what; listing and fingerprint search) and
export.py (exports, the checkpoint list, status). This package exports the writing API every service
calls: `from broker.services import audit; await audit.record(conn, rt, ctx)`.
"""

from broker.services.audit.events import client_kind, outcome_for, shape, system_event, to_record
from broker.services.audit.writing import (
    UNAVAILABLE,
    AuditUnavailable,
    must_wait,
    not_recorded,
    record,
    record_alone,
    record_in,
    record_system,
    saw_value,
    to_database,
    touched_keys,
    write_events,
)

__all__ = [
    "UNAVAILABLE",
    "AuditUnavailable",
    "client_kind",
    "must_wait",
    "not_recorded",
    "outcome_for",
    "record",
    "record_alone",
    "record_in",
    "record_system",
    "saw_value",
    "shape",
    "system_event",
    "to_database",
    "to_record",
    "touched_keys",
    "write_events",
]
