"""Reading `strongroom.yml`: YAML with every scalar kept as the text the user wrote.

The manifest is reviewed by people, so what it says must be what it means:
- every scalar is a string (PyYAML's BaseLoader): `on`, `no`, `1.10` or `0755` are never turned into a
  boolean or a number behind the reviewer's back; typed fields (ports, flags) are converted by the models;
- duplicate keys, aliases and explicit tags are refused (a later duplicate silently wins in YAML; an alias can
  make a small file expand enormously; a tag like `!ruby/object` means something to some loader);
- size and nesting are bounded before anything is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from broker.domain.manifest import Problem

MAX_MANIFEST_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000

_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!"})

Path = tuple[str | int, ...]
Tree = dict[str, "Tree"] | list["Tree"] | str


@dataclass(frozen=True)
class Document:
    """A parsed YAML document: the tree of strings, lists and mappings, and the line of each path."""

    tree: Tree | None
    lines: dict[Path, int]


class SourceError(ValueError):
    """The text is not YAML this compiler accepts; `problems` say where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.text() for p in problems))
        self.problems = problems


# libyaml when PyYAML was built with it (a 1,000-secret manifest parses in milliseconds, not a tenth of a second).
_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_NOT_SPECIFIC = (None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else None


class _Builder:
    """Builds the tree straight from parser events: no YAML node objects, no second pass."""

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.count = 0

    def refuse(self, path: Path, message: str, event: yaml.Event) -> SourceError:
        return SourceError([Problem(path, message, _line(event))])

    def value(self, events: Iterator[yaml.Event], event: yaml.Event, path: Path) -> Tree:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.refuse(path, f"the document has more than {MAX_NODES} nodes", event)
        if len(path) > MAX_DEPTH:
            raise self.refuse(path, f"nested deeper than {MAX_DEPTH} levels", event)
        if isinstance(event, yaml.AliasEvent):
            raise self.refuse(path, "YAML aliases (*name) are not allowed; repeat the value", event)
        if getattr(event, "tag", None) not in _NOT_SPECIFIC:
            raise self.refuse(path, "YAML tags are not allowed (write the value as plain text)", event)
        line = _line(event)
        if line is not None:
            self.lines[path] = line
        if isinstance(event, yaml.ScalarEvent):
            return str(event.value)
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Tree] = []
            for item in events:
                if type(item) is yaml.SequenceEndEvent:
                    return items
                if type(item) is yaml.ScalarEvent and item.tag is None and len(path) < MAX_DEPTH:
                    # The common case (a list of names), without a call per item.
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise self.refuse(path, f"the document has more than {MAX_NODES} nodes", item)
                    line = _line(item)
                    if line is not None:
                        self.lines[(*path, len(items))] = line
                    items.append(item.value)
                    continue
                items.append(self.value(events, item, (*path, len(items))))
        if isinstance(event, yaml.MappingStartEvent):
            out: dict[str, Tree] = {}
            for key_event in events:
                if isinstance(key_event, yaml.MappingEndEvent):
                    return out
                if not isinstance(key_event, yaml.ScalarEvent) or key_event.tag not in _NOT_SPECIFIC:
                    raise self.refuse(path, "keys must be plain text", key_event)
                key = str(key_event.value)
                if key in out:
                    raise self.refuse(
                        (*path, key), "duplicate key (YAML would silently keep the last one)", key_event
                    )
                out[key] = self.value(events, next(events), (*path, key))
        raise self.refuse(path, "unsupported YAML", event)  # pragma: no cover


def load(text: str) -> Document:
    """Parse one YAML document into strings, lists and mappings, or raise SourceError."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_MANIFEST_BYTES:
        raise SourceError([Problem((), f"the manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB")])
    if "\x00" in text:
        raise SourceError([Problem((), "the manifest contains a NUL character")])
    builder = _Builder()
    tree: Tree | None = None
    try:
        events = iter(yaml.parse(text, Loader=_LOADER))
        documents = 0
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise builder.refuse((), "not valid YAML: more than one document", event)
            elif isinstance(event, yaml.NodeEvent | yaml.CollectionStartEvent):
                tree = builder.value(events, event, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = int(mark.line) + 1 if mark is not None else None
        reason = exc.problem or "invalid YAML"
        raise SourceError([Problem((), f"not valid YAML: {reason}", line)]) from None
    except yaml.YAMLError:
        raise SourceError([Problem((), "not valid YAML")]) from None
    return Document(tree, builder.lines)
