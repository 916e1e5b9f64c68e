"""The renderer interface: resolved entries in, files out, every value carried exactly or refused.

A renderer is pure (no I/O, no settings, no clock). For each target it either encodes every value so
that the target's real consumer reads back exactly the same text, or raises `RenderError` naming the
key, the target, the reason and the alternative. It never changes a value on the way ("best effort").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from broker.errors import Invalid


class Entry(NamedTuple):
    """One resolved variable: its name, its text, and whether it is a secret; repr never shows the value."""

    # A named tuple, not a frozen dataclass: a compile makes one per variable, and a frozen dataclass
    # costs about three times as much to build.
    name: str
    value: str
    sensitive: bool

    def __repr__(self) -> str:
        return f"Entry(name={self.name!r}, value=[REDACTED], sensitive={self.sensitive})"


@dataclass(frozen=True)
class RenderedFile:
    """One output file: a path relative to the output directory, its bytes, and the mode to write it with."""

    path: str
    content: bytes = field(repr=False)
    holds_values: bool
    mode: int = 0o600

    def __repr__(self) -> str:
        return (
            f"RenderedFile(path={self.path!r}, content=<{len(self.content)} bytes>, "
            f"holds_values={self.holds_values}, mode={self.mode:#o})"
        )


@dataclass(frozen=True)
class RenderOptions:
    """What a renderer needs besides the entries: the environment slug and the service (app) name.

    `basename` overrides the output file name (each target has a default); `namespace` is used by
    the k8s target only (omitted from the manifests when None).
    """

    environment: str
    service: str
    basename: str | None = None
    namespace: str | None = None


class RenderError(Invalid):
    """A value (or name) the target cannot carry exactly; the message never contains the value.

    `suggested` lists the other targets the alternative names: each of them carries this very value.
    """

    def __init__(
        self, *, key: str, target: str, reason: str, alternative: str, suggested: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{key}: {reason}; the {target} target cannot carry it ({alternative})", field=key)
        self.key = key
        self.target = target
        self.reason = reason
        self.alternative = alternative
        self.suggested = suggested


class Renderer(Protocol):
    """A target format: `render` returns the files or raises RenderError; it never alters a value."""

    @property
    def name(self) -> str:
        """The target name used on the command line and in the registry (`env-file`, `k8s`, ...)."""
        ...

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Encode every entry for this target, or raise RenderError for the first one it cannot carry."""
        ...


def find_problems(
    renderer: Renderer, entries: Sequence[Entry], *, options: RenderOptions
) -> list[RenderError]:
    """Every RenderError the renderer would raise for these entries (one per bad entry), for `check`."""
    problems: list[RenderError] = []
    try:
        renderer.render(entries, options=options)
    except RenderError:
        for entry in entries:
            try:
                renderer.render([entry], options=options)
            except RenderError as exc:
                if all((p.key, p.reason) != (exc.key, exc.reason) for p in problems):  # an options error once
                    problems.append(exc)
        if not problems:  # a problem of the whole set (duplicate names), not of one entry
            try:
                renderer.render(entries, options=options)
            except RenderError as exc:
                problems.append(exc)
    return problems
