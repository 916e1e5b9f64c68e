"""`json` and `yaml`: one flat object, name -> value, written by a serializer (never a template).

JSON carries every valid Unicode string (control characters and NUL as `\\u` escapes). YAML is
written by PyYAML's emitter (libyaml) from events, every value quoted or in a literal block (`|`), so no YAML 1.1
or 1.2 reader takes a value for a number, boolean, null, tag, alias or merge key; NUL and other
non-printable characters are written as double-quoted escapes. Both refuse only lone surrogates
(not text, and not representable in UTF-8). `dump_yaml` is shared with the k8s renderer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
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

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderOptions

# A key left plain only when every YAML 1.1 and 1.2 reader takes it for this very string.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


try:  # libyaml's emitter: several times faster than PyYAML's pure-Python one
    from yaml import CSafeDumper as _SafeDumper
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _SafeDumper  # type: ignore[assignment]

# Multi-line text made only of these goes in a literal block (PEM keys stay readable). Anything else
# is double-quoted with escapes: PyYAML writes NEL (U+0085) raw into a block, where readers take it for
# a line break, and tabs, CR and Unicode line separators are just as fragile there. (The emitter itself
# still falls back to double quotes when a block cannot carry the text: leading or trailing spaces.)
_BLOCK_SAFE = re.compile(
    r"[\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*"
)


_QUOTED = (
    False,
    True,
)  # ScalarEvent.implicit: no tag, and a quoted or block scalar is a string to every reader
_PLAIN = (True, True)


def _scalar(text: str) -> ScalarEvent:
    # Positional arguments: this runs once per value, and keywords cost a third more here.
    if "\n" in text and _BLOCK_SAFE.fullmatch(text) is not None:
        return ScalarEvent(None, None, _QUOTED, text, None, None, "|")
    return ScalarEvent(None, None, _QUOTED, text, None, None, '"')


def _key(text: str) -> ScalarEvent:
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _KEYWORDS:
        return ScalarEvent(None, None, _PLAIN, text, None, None, None)
    return _scalar(text)


def _events(data: Any, out: list[Event]) -> None:
    # Appends to one list rather than yielding: twice as fast for a thousand values.
    if isinstance(data, str):
        out.append(_scalar(data))
    elif isinstance(data, Mapping):
        out.append(MappingStartEvent(None, None, True, flow_style=False))
        for key, value in data.items():
            out.append(_key(str(key)))
            if isinstance(value, str):
                out.append(_scalar(value))
            else:
                _events(value, out)
        out.append(MappingEndEvent())
    elif isinstance(data, list | tuple):
        out.append(SequenceStartEvent(None, None, True, flow_style=False))
        for item in data:
            _events(item, out)
        out.append(SequenceEndEvent())
    elif data is None:
        out.append(ScalarEvent(None, None, (True, False), "null"))
    elif isinstance(data, bool):
        out.append(ScalarEvent(None, None, (True, False), "true" if data else "false"))
    elif isinstance(data, int):
        out.append(ScalarEvent(None, None, (True, False), str(int(data))))
    else:
        raise TypeError(f"dump_yaml: cannot write a {type(data).__name__}")


def dump_yaml(data: Any, *, documents: bool = False) -> str:
    """YAML text for plain data (dicts, lists, str, int, bool, None); every string value quoted.

    With `documents=True`, `data` is a list of documents, each started by `---`. Key order is kept.
    Events go straight to the (libyaml) emitter: it does all quoting and escaping; no representer or
    resolver runs, so nothing is ever written as a tag, alias or implicitly typed plain scalar.
    """

    events: list[Event] = [StreamStartEvent()]
    for document in data if documents else [data]:
        events.append(DocumentStartEvent(explicit=documents))
        _events(document, events)
        events.append(DocumentEndEvent(explicit=False))
    events.append(StreamEndEvent())
    return str(yaml.emit(events, Dumper=_SafeDumper, allow_unicode=True, width=1 << 30))


def _values(entries: Sequence[Entry], target: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for entry in checks.unique_sorted(entries, target):
        if not entry.name:
            raise checks.refuse(entry, target, "the name is empty", "name the variable")
        checks.utf8(entry, target)
        try:
            entry.name.encode()
        except UnicodeEncodeError:
            raise checks.refuse(
                entry, target, "the name is not valid Unicode text", "rename the variable"
            ) from None
        values[entry.name] = entry.value
    return values


class JsonRenderer:
    """A JSON object of name -> value (UTF-8, sorted by name)."""

    name = "json"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Serialize the values with the json module; only lone surrogates are refused."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.json", self.name)
        text = json.dumps(_values(entries, self.name), ensure_ascii=False, indent=2) + "\n"
        return [RenderedFile(path=path, content=text.encode(), holds_values=True)]


class YamlRenderer:
    """A YAML mapping of name -> value (UTF-8, sorted by name, every value quoted)."""

    name = "yaml"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Serialize the values with PyYAML's safe dumper; only lone surrogates are refused."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.yaml", self.name)
        header = f"# Variables for {options.service} ({options.environment}), rendered by Strongroom\n"
        text = header + dump_yaml(_values(entries, self.name))
        return [RenderedFile(path=path, content=text.encode(), holds_values=True)]
