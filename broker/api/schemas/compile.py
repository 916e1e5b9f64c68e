"""Bodies of the compile, check, named-values and diff routes; requests forbid unknown keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from broker.api.schemas import Request, ResolvedValueOut

MANIFEST_MAX_CHARS = 256 * 1024
Target = Literal["dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd", "kamal"]


class CompileRequest(Request):
    """Compile the manifest for this environment into the named targets."""

    manifest: str = Field(
        max_length=MANIFEST_MAX_CHARS, description="strongroom.yml as text; it holds no values"
    )
    targets: list[Target] = Field(min_length=1, max_length=16)
    role: str | None = Field(
        default=None,
        max_length=64,
        description="Render this role's variables (its own over the global ones) for the non-Kamal targets",
    )


class CheckRequest(Request):
    """Find every problem a compile would meet; no value is returned."""

    manifest: str = Field(max_length=MANIFEST_MAX_CHARS)
    targets: list[Target] = Field(default_factory=list, max_length=16)
    role: str | None = Field(default=None, max_length=64)


class ValuesRequest(Request):
    """Read these values (inheritance applied): all of them, or 404 naming one that is missing."""

    names: list[str] = Field(min_length=1, max_length=1000)


class ProblemOut(BaseModel):
    """One problem: where (a manifest path such as roles/web/hosts/0, or targets/<target>), what, how bad."""

    path: str
    line: int | None
    level: Literal["error", "warning"]
    message: str


class KeyOut(BaseModel):
    """A stored value that was read: its name, the environment it came from and its version (never the value)."""

    name: str
    environment: str
    version: int


class FileOut(BaseModel):
    """A rendered file: a relative path, its content, whether it holds values, the mode to write it with."""

    path: str
    content: str
    encoding: Literal["utf-8", "base64"]
    holds_values: bool
    mode: int


class CompileOut(BaseModel):
    """Rendered files, with the warnings that did not stop the compile and the keys read."""

    project: str
    environment: str
    files: list[FileOut]
    warnings: list[ProblemOut]
    keys: list[KeyOut]


class CheckOut(BaseModel):
    """`ok` is false when any problem is an error."""

    project: str
    environment: str
    ok: bool
    problems: list[ProblemOut]
    keys: list[KeyOut]


class ValuesOut(BaseModel):
    """Named values."""

    project: str
    environment: str
    values: dict[str, ResolvedValueOut]


class FingerprintOut(BaseModel):
    """A value's stand-in in a comparison: the audit trail's HMAC-SHA256 under the audit key, stable across answers."""

    fingerprint: str
    version: int
    environment: str


class DifferentOut(BaseModel):
    """A key whose values differ between the two environments."""

    name: str
    a: FingerprintOut
    b: FingerprintOut


class DiffOut(BaseModel):
    """Two environments compared: names only in one, names whose values differ, names that are equal."""

    project: str
    a: str
    b: str
    only_in_a: list[str]
    only_in_b: list[str]
    different: list[DifferentOut]
    same: list[str]
