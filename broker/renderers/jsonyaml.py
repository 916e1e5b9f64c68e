"""`json` and `yaml`: one flat object, name -> value, written by a serializer (never a template).

JSON carries every valid Unicode string (control characters and NUL as `\\u` escapes). YAML is
written by broker/renderers/yamltext.py (events straight to libyaml's emitter), every value quoted or in a
literal block (`|`), so no YAML 1.1 or 1.2 reader takes a value for a number, boolean, null, tag, alias
or merge key; NUL and other non-printable characters are written as double-quoted escapes. Both refuse only lone surrogates
(not text, and not representable in UTF-8). `dump_yaml` is shared with the k8s renderer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from broker.renderers import checks, yamltext
from broker.renderers.base import Entry, RenderedFile, RenderOptions

# Every value quoted or in a literal block, non-ASCII text written as itself.
_STYLE = yamltext.Style(plain_values=False, literal_blocks=True, allow_unicode=True)


def dump_yaml(data: Any, *, documents: bool = False) -> str:
    """YAML text for plain data (dicts, lists, str, int, bool, None); every string value quoted.

    With `documents=True`, `data` is a list of documents, each started by `---`. Key order is kept.
    """
    return yamltext.dump(data, style=_STYLE, documents=documents)


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
