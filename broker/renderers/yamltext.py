"""Writing YAML from serializer events: the one emitter behind the yaml, k8s and kamal targets.

No representer or resolver runs: the events go straight to PyYAML's emitter (libyaml when built with it),
which does all quoting and escaping, so nothing is ever written as a tag, alias or implicitly typed plain
scalar. A string is left plain only when it is an identifier that no YAML 1.1 or 1.2 reader (Ruby's Psych
included) takes for a boolean or null, and only where the caller's `Style` allows; otherwise it is
double-quoted (which carries any text exactly) or, where allowed, a literal block. Integers, booleans and
null are written plain; any other type is refused with its path, as is a lone surrogate (not text, and
not representable in UTF-8).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

try:  # libyaml's emitter: several times faster than PyYAML's pure-Python one
    from yaml import CSafeDumper as _Emitter
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _Emitter  # type: ignore[assignment]

# Plain only when every YAML 1.1 and 1.2 reader takes it for this very string.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})

# Multi-line text made only of these may go in a literal block (PEM keys stay readable). Anything else
# is double-quoted with escapes: PyYAML writes NEL (U+0085) raw into a block, where readers take it for
# a line break, and tabs, CR and Unicode line separators are just as fragile there. (The emitter itself
# still falls back to double quotes when a block cannot carry the text: leading or trailing spaces.)
_BLOCK_SAFE = re.compile(
    r"[\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*"
)

_PLAIN = (True, True)  # ScalarEvent.implicit: no tag, read as a string when plain or quoted
_QUOTED = (False, True)  # no tag, and a quoted or block scalar is a string to every reader
_TYPED = (True, False)  # an int, bool or null, plain
SURROGATE = "it is not valid Unicode text (a lone surrogate)"


class Unwritable(Exception):
    """A value with no exact YAML form; `where` is its path in the data (a/0/b), `reason` a sentence."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class Style:
    """How strings are written: identifier values plain (keys always may be), multi-line text in blocks,
    non-ASCII text raw (else as escapes)."""

    plain_values: bool
    literal_blocks: bool
    allow_unicode: bool


def _scalars(style: Style) -> tuple[Callable[[str], ScalarEvent | None], Callable[[str], ScalarEvent | None]]:
    """The (value, key) scalar makers for a style; None for text UTF-8 cannot carry."""
    blocks = style.literal_blocks

    def quoted(text: str) -> ScalarEvent | None:
        # Positional arguments: this runs once per value, and keywords cost a third more here.
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return None
        if blocks and "\n" in text and _BLOCK_SAFE.fullmatch(text) is not None:
            return ScalarEvent(None, None, _QUOTED, text, None, None, "|")
        return ScalarEvent(None, None, _QUOTED, text, None, None, '"')

    def key(text: str) -> ScalarEvent | None:
        if _IDENTIFIER.fullmatch(text) and text.lower() not in _KEYWORDS:
            return ScalarEvent(None, None, _PLAIN, text, None, None, None)
        return quoted(text)

    return (key if style.plain_values else quoted), key


def _events(
    data: Any,
    where: str,
    out: list[Event],
    value: Callable[[str], ScalarEvent | None],
    key: Callable[[str], ScalarEvent | None],
) -> None:
    # Appends to one list rather than yielding: twice as fast for a thousand values. A string inside a
    # container is handled inline (the common case), anything else recursively with its path.
    if isinstance(data, str):
        event = value(data)
        if event is None:
            raise Unwritable(where.rstrip("/"), SURROGATE)
        out.append(event)
    elif isinstance(data, Mapping):
        out.append(MappingStartEvent(None, None, True, flow_style=False))
        for k, v in data.items():
            event = key(k) if isinstance(k, str) else None
            if event is None:
                raise Unwritable(f"{where}{k}", "the key is not valid Unicode text")
            out.append(event)
            event = value(v) if isinstance(v, str) else None
            if event is not None:
                out.append(event)
            else:
                _events(v, f"{where}{k}/", out, value, key)
        out.append(MappingEndEvent())
    elif isinstance(data, list | tuple):
        out.append(SequenceStartEvent(None, None, True, flow_style=False))
        for i, item in enumerate(data):
            event = value(item) if isinstance(item, str) else None
            if event is not None:
                out.append(event)
            else:
                _events(item, f"{where}{i}/", out, value, key)
        out.append(SequenceEndEvent())
    elif isinstance(data, bool):
        out.append(ScalarEvent(None, None, _TYPED, "true" if data else "false"))
    elif isinstance(data, int):
        out.append(ScalarEvent(None, None, _TYPED, str(int(data))))
    elif data is None:
        out.append(ScalarEvent(None, None, _TYPED, "null"))
    else:
        raise Unwritable(where.rstrip("/"), f"a {type(data).__name__} has no exact YAML form here")


def dump(data: Any, *, style: Style, documents: bool = False) -> str:
    """YAML text for plain data (mappings, lists, str, int, bool, None), key order kept.

    With `documents=True`, `data` is a list of documents, each started by `---`. Raises Unwritable.
    """
    value, key = _scalars(style)
    events: list[Event] = [StreamStartEvent()]
    for document in data if documents else [data]:
        events.append(DocumentStartEvent(explicit=documents))
        _events(document, "", events, value, key)
        events.append(DocumentEndEvent(explicit=False))
    events.append(StreamEndEvent())
    return str(yaml.emit(events, Dumper=_Emitter, allow_unicode=style.allow_unicode, width=1 << 30))
