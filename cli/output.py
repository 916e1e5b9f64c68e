"""What the CLI prints: plain aligned tables, JSON for scripts, durations and local times.

Text that came from the broker is passed through `clean` before it reaches a terminal, so a description or an
error detail cannot smuggle escape sequences. Values are never printed here: `secrets get --reveal` writes
its one value itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TextIO

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
    """Print a table (its header bold on a colour terminal), or the `empty` sentence when there are no rows."""
    if not rows:
        click.echo(empty)
        return
    header, _, body = table(headers, rows).partition("\n")
    click.echo(style(header, bold=True))
    click.echo(body)


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


def colour_enabled(stream: object) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org) or TERM=dumb."""
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty) or not isatty():
        return False
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def style(text: str, *, err: bool = False, **styles: object) -> str:
    """`text` styled with click.style when the target stream may have colour, else unchanged."""
    if not colour_enabled(sys.stderr if err else sys.stdout):
        return text
    return click.style(text, **styles)  # type: ignore[arg-type]


def error(message: str) -> None:
    """Print `Error: <sentence>` on stderr, `Error:` in red on a colour terminal."""
    click.echo(f"{style('Error:', err=True, fg='red', bold=True)} {clean(message)}", err=True)


def error_json(message: str, *, field: str | None, status: int | None) -> None:
    """Print an error as one line of JSON on stderr: `{"error": ..., "field": ..., "status": ...}`."""
    click.echo(json.dumps({"error": message, "field": field, "status": status}, sort_keys=True), err=True)


def warn(message: str) -> None:
    """Print `Warning: <sentence>` on stderr."""
    click.echo(f"{style('Warning:', err=True, fg='yellow', bold=True)} {clean(message)}", err=True)


class _Spinner:
    """A one-line spinner on a terminal's stderr, drawn only once `delay` seconds have passed."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: TextIO, delay: float) -> None:
        import threading

        self._label = label
        self._stream = stream
        self._delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._drawn = False

    def _spin(self) -> None:
        if self._stop.wait(self._delay):
            return
        frame = 0
        while True:
            self._stream.write(f"\r{self.FRAMES[frame % 4]} {self._label}...")
            self._stream.flush()
            self._drawn = True
            frame += 1
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()


def progress(label: str, *, delay: float = 1.0) -> AbstractContextManager[None]:
    """A context that shows `label` with a spinner on stderr if it lasts over `delay` seconds (terminal only)."""
    stream = sys.stderr
    if stream is None or not stream.isatty() or os.environ.get("TERM") == "dumb":
        return nullcontext()
    return _Spinner(label, stream, delay)
