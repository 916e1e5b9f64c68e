"""Shared route bits: problem responses for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """An error (RFC 9457 problem JSON)."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None


def _p(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _p("Invalid input; the detail names the field and the rule"),
    401: _p("Authentication failed"),
    403: _p("The token's scopes do not grant this"),
    404: _p("Not found"),
    409: _p("Conflict"),
    413: _p("Body too large"),
    429: _p("Too many failed authentications"),
    500: _p("Stored data failed its integrity check, or an internal error"),
    503: _p("A dependency (audit trail, database, key source) is unavailable"),
}

NO_STORE = {"Cache-Control": "no-store"}
