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
from yaml import MappingEndEvent, ScalarEvent, SequenceEndEvent

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

    # The common nodes (a scalar with no tag in a list or as a mapping's value) are handled inline in
    # the loops rather than by a call per node. Lines are recorded only when asked for: they are needed
    # for error messages alone, so a valid manifest is read without them.

    def __init__(self, with_lines: bool) -> None:
        self.lines: dict[Path, int] = {}
        self.with_lines = with_lines
        self.count = 0

    def refuse(self, path: Path, message: str, event: yaml.Event) -> SourceError:
        return SourceError([Problem(path, message, _line(event))])

    def too_many(self, path: Path, event: yaml.Event) -> SourceError:
        return self.refuse(path, f"the document has more than {MAX_NODES} nodes", event)

    def value(self, events: Iterator[yaml.Event], event: yaml.Event, path: Path) -> Tree:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.too_many(path, event)
        if len(path) > MAX_DEPTH:
            raise self.refuse(path, f"nested deeper than {MAX_DEPTH} levels", event)
        if isinstance(event, yaml.AliasEvent):
            raise self.refuse(path, "YAML aliases (*name) are not allowed; repeat the value", event)
        if getattr(event, "tag", None) not in _NOT_SPECIFIC:
            raise self.refuse(path, "YAML tags are not allowed (write the value as plain text)", event)
        with_lines = self.with_lines
        if with_lines:
            line = _line(event)
            if line is not None:
                self.lines[path] = line
        if isinstance(event, yaml.ScalarEvent):
            return str(event.value)
        inline = len(path) < MAX_DEPTH  # a child scalar is one level deeper
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Tree] = []
            for item in events:
                if type(item) is SequenceEndEvent:
                    return items
                if type(item) is ScalarEvent and item.tag is None and inline:
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise self.too_many(path, item)
                    if with_lines:
                        line = _line(item)
                        if line is not None:
                            self.lines[(*path, len(items))] = line
                    items.append(item.value)
                    continue
                items.append(self.value(events, item, (*path, len(items))))
        if isinstance(event, yaml.MappingStartEvent):
            out: dict[str, Tree] = {}
            for key_event in events:
                if type(key_event) is MappingEndEvent:
                    return out
                if type(key_event) is not ScalarEvent or key_event.tag not in _NOT_SPECIFIC:
                    raise self.refuse(path, "keys must be plain text", key_event)
                key = str(key_event.value)
                if key in out:
                    raise self.refuse(
                        (*path, key), "duplicate key (YAML would silently keep the last one)", key_event
                    )
                item = next(events)
                if type(item) is ScalarEvent and item.tag is None and inline:
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise self.too_many((*path, key), item)
                    if with_lines:
                        line = _line(item)
                        if line is not None:
                            self.lines[(*path, key)] = line
                    out[key] = item.value
                    continue
                out[key] = self.value(events, item, (*path, key))
        raise self.refuse(path, "unsupported YAML", event)  # pragma: no cover


def load(text: str, *, with_lines: bool = True) -> Document:
    """Parse one YAML document into strings, lists and mappings, or raise SourceError.

    `with_lines`: also note the line of every node (for messages about a tree that turns out invalid).
    """
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_MANIFEST_BYTES:
        raise SourceError([Problem((), f"the manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB")])
    if "\x00" in text:
        raise SourceError([Problem((), "the manifest contains a NUL character")])
    builder = _Builder(with_lines)
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
