"""Audit (docs/audit.md): records pass through as the broker's JSON, which is what auditors keep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cli.client.reader import json_object, query_string
from cli.client.transport import Transport


class AuditApi(Transport):
    """Searching, fingerprinting, checkpoints and exports of the audit log."""

    def audit_events(self, query: dict[str, str]) -> dict[str, Any]:
        """A page of audit events (`GET /v1/audit/events`)."""
        return json_object(self._request("GET", "/v1/audit/events" + query_string(query)), "events")

    def audit_fingerprint(self, *, value: str) -> dict[str, Any]:
        """The fingerprint of a candidate value and the events that touched it (`POST /v1/audit/fingerprint`)."""
        return json_object(
            self._request("POST", "/v1/audit/fingerprint", {"value": value}, redact=(value,)), "fingerprint"
        )

    def audit_checkpoints(self, *, from_seq: int = 0) -> dict[str, Any]:
        """Signed checkpoints from `from_seq` on, and the public key (`GET /v1/audit/checkpoints`)."""
        return json_object(
            self._request("GET", "/v1/audit/checkpoints" + query_string({"from_seq": str(from_seq)})),
            "checkpoints",
        )

    def audit_export(self, query: dict[str, str], write: Callable[[bytes], object]) -> None:
        """Stream an export (`GET /v1/audit/export`) to `write`, chunk by chunk (exports can be large)."""
        path = "/v1/audit/export" + query_string(query)
        self._stream(path, accept="application/x-ndjson, text/csv", write=write)
