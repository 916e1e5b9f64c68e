"""What the CLI prints: plain aligned tables, JSON for scripts, durations and local times.

Text that came from the broker is passed through `clean` before it reaches a terminal, so a description or an
error detail cannot smuggle escape sequences. Values are never printed here: `secrets get --reveal` writes
its one value itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import click


def clean(text: str) -> str:
    """The text with every non-printable character (escapes, newlines, bidi controls) shown as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with two spaces between them, headers first; no trailing spaces."""
    cells = [[clean(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> None:
    """Print a table, or the `empty` sentence when there are no rows."""
    click.echo(table(headers, rows) if rows else empty)


def emit_json(data: object) -> None:
    """Print data as indented JSON (ASCII-only, so nothing in it can act on a terminal)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def emit_fields(fields: Sequence[tuple[str, str]]) -> None:
    """Print `label: value` lines with the values aligned."""
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        click.echo(f"{label + ':':<{width}} {clean(value)}")


def yes_no(value: bool) -> str:
    """`yes` or `no`."""
    return "yes" if value else "no"


def duration(seconds: float) -> str:
    """A short human duration: `45 seconds`, `15 minutes`, `2 hours 5 minutes`, `3 days 4 hours`."""
    seconds = max(0, int(seconds))
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    parts: list[str] = []
    for name, size in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
        if len(parts) == 2:
            break
    return " ".join(parts) if parts else "0 seconds"


def local_time(epoch: float) -> str:
    """A local date and time to the minute, with the zone name."""
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch)).rstrip()
