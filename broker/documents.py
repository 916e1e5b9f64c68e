"""The operator's configuration documents (the backends file, the OIDC file): JSON, or YAML when not JSON."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from broker.errors import Invalid

if TYPE_CHECKING:
    from pydantic import ValidationError


def parse_object(text: str, *, source: str, field: str, shape: str) -> dict[str, Any]:
    """The document's top-level object; `shape` says what it must hold (named in the error)."""
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml  # only when the file is not JSON

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise Invalid(f"{source}: neither valid JSON nor valid YAML", field=field) from None
    if not isinstance(doc, dict):
        raise Invalid(f"{source}: must be an object with {shape}", field=field)
    return doc


def refusal(
    error: ValidationError, *, source: str, field: str, under: str = "", tags: Collection[str] = ()
) -> Invalid:
    """A document's first validation problem as one sentence naming the file and the key path (below
    `under`; the union tags in `tags` left out of it), and how many more problems there are. Never the
    input: a configuration document may hold credentials."""
    problems = error.errors(include_input=False, include_url=False, include_context=False)
    first = problems[0]
    path = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p in tags))
    where = ".".join(p for p in (under, path) if p) or "file"
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = len(problems) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return Invalid(f"{source}: {where}: {msg}{tail}", field=field)
