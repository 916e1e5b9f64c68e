"""Checks the renderers share: names, Unicode, duplicates, sizes and output file names.

Every check raises `RenderError` naming the key, the target, the reason and the alternative; none
of them ever puts a value in a message.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from contextvars import ContextVar

from broker.renderers.base import Entry, RenderError, RenderOptions

POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Linux refuses (E2BIG) to exec with any single "NAME=value" string longer than MAX_ARG_STRLEN
# (32 pages = 131072 bytes, counting the terminating NUL).
ENV_STRING_MAX_BYTES = 131072 - 1
# RenderOptions.environment / .service: safe in file names and comments (k8s checks its own label limit).
_OPTION_TEXT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?")
_PRINTABLE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,256}")

FILE_MOUNT = "use a file mount"
_BY_NAME = operator.attrgetter("name")


def shown(name: str) -> str:
    """The key as shown in a message: verbatim when it is plain, else escaped (a name is never a secret)."""
    return name if _PRINTABLE_KEY.fullmatch(name) else ascii(name)


# Set while a refusal tries other targets on the value: their own refusals then name no target (no recursion).
_PROBING: ContextVar[bool] = ContextVar("strongroom_render_probing", default=False)
# The value decides whether a target carries it; these only have to be valid for every target.
_PROBE_OPTIONS = RenderOptions(environment="production", service="app")


def carrying(entry: Entry, targets: Sequence[str]) -> tuple[str, ...]:
    """Those of `targets` that carry this very entry (name, value and sensitivity), in the order given."""
    if _PROBING.get():
        return ()
    # Imported here: the registry imports every renderer, and every renderer imports this module.
    from broker.renderers.registry import get_renderer

    able: list[str] = []
    token = _PROBING.set(True)
    try:
        for name in targets:
            try:
                get_renderer(name).render([entry], options=_PROBE_OPTIONS)
            except RenderError:
                continue
            able.append(name)
    finally:
        _PROBING.reset(token)
    return tuple(able)


def refuse(
    entry: Entry | str,
    target: str,
    reason: str,
    alternative: str,
    *,
    targets: Sequence[str] = (),
    tried: Entry | None = None,
) -> RenderError:
    """Build the RenderError for an entry (or a bare key name, with `tried` the entry to try elsewhere).

    With `targets`, the alternative starts with those of them that carry this very value (tried, not
    assumed), then `alternative` ("use a file mount" becomes "use the json target, or a file mount").
    """
    key = entry if isinstance(entry, str) else entry.name
    probe = entry if not isinstance(entry, str) else tried
    suggested = carrying(probe, targets) if targets and probe is not None else ()
    if suggested:
        names = suggested[0] if len(suggested) == 1 else f"{', '.join(suggested[:-1])} or {suggested[-1]}"
        alternative = f"use the {names} target, or {alternative.removeprefix('use ')}"
    return RenderError(
        key=shown(key), target=target, reason=reason, alternative=alternative, suggested=suggested
    )


def check_options(options: RenderOptions, target: str) -> None:
    """Environment and service must be plain names: they appear in file names, comments and labels."""
    for field, text in (("environment", options.environment), ("service", options.service)):
        if not _OPTION_TEXT.fullmatch(text):
            raise RenderError(
                key=f"options/{field}",
                target=target,
                reason="must be 1-64 letters, digits, '_', '.' or '-', starting and ending with a letter or digit",
                alternative="rename it",
            )


def output_path(options: RenderOptions, default: str, target: str) -> str:
    """The output file name: options.basename if given (a bare file name), else the target's default."""
    name = options.basename if options.basename is not None else default
    if not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise RenderError(
            key="options/basename",
            target=target,
            reason="must be a plain file name (no directory part, no control characters)",
            alternative="pass a file name such as production.env",
        )
    return name


def unique_sorted(entries: Sequence[Entry], target: str) -> list[Entry]:
    """Entries sorted by name; a name given twice is refused (the second would silently win)."""
    names = {entry.name for entry in entries}
    if len(names) != len(entries):
        seen: set[str] = set()
        for entry in entries:
            if entry.name in seen:
                raise refuse(entry, target, "the name is given twice", "give each variable once")
            seen.add(entry.name)
    return sorted(entries, key=_BY_NAME)


def utf8(entry: Entry, target: str) -> bytes:
    """The value's UTF-8 bytes; a lone surrogate (not text) is refused."""
    try:
        return entry.value.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(
            entry,
            target,
            "value is not valid Unicode text (it has a lone surrogate)",
            "store the value as valid text",
        ) from None


def posix_name(entry: Entry, target: str) -> None:
    """Shell-style variable names only: [A-Za-z_][A-Za-z0-9_]*."""
    if not POSIX_NAME.fullmatch(entry.name):
        raise refuse(
            entry,
            target,
            "the name is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
            "rename the variable",
        )


_CHAR_REASONS = {
    "\n": "value has a newline",
    "\r": "value has a carriage return",
    "\x00": "value has a NUL character",
}


def refuse_chars(
    entry: Entry, target: str, chars: Iterable[str], alternative: str, *, targets: Sequence[str] = ()
) -> None:
    """Refuse a value holding any of `chars` (newline, carriage return, NUL get a named reason)."""
    for char in chars:
        if char in entry.value:
            reason = _CHAR_REASONS.get(char, f"value has the character U+{ord(char):04X}")
            raise refuse(entry, target, reason, alternative, targets=targets)


def env_string_size(entry: Entry, data: bytes, target: str) -> None:
    """Refuse NAME=value strings Linux cannot pass to a process (over MAX_ARG_STRLEN)."""
    if len(entry.name.encode()) + 1 + len(data) > ENV_STRING_MAX_BYTES:
        raise refuse(
            entry,
            target,
            f"NAME=value is longer than {ENV_STRING_MAX_BYTES} bytes, which Linux cannot pass in an environment",
            FILE_MOUNT,
        )
