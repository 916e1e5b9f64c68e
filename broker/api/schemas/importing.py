"""Bodies of the import route (issue 7)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from broker.api.schemas import Request


class ImportRequest(Request):
    """Copy secrets from a configured upstream into this (database) environment."""

    source: str = Field(
        min_length=1,
        max_length=2048,
        examples=["vault://secret/myapp/production", "aws-sm://myapp/production"],
        description="vault://MOUNT/PATH or aws-sm://PREFIX (or aws-sm://ARN); must lie under a configured prefix",
    )
    backend: str | None = Field(
        default=None, max_length=128, description="which configured upstream, if several match"
    )
    dry_run: bool = Field(default=False, description="list what would change, write nothing")
    overwrite: bool = Field(default=False, description="replace existing values that differ")


class ImportChangeOut(BaseModel):
    """What happens (or would happen) to one name."""

    name: str
    action: Literal["create", "update", "unchanged", "skip"]
    reason: str | None
    upstream_path: str | None
    upstream_version: str | None


class ImportOut(BaseModel):
    """The outcome of an import or a dry run (never values)."""

    source: str
    backend: str
    dry_run: bool
    changes: list[ImportChangeOut]
