"""The operator's configuration documents (the backends file, the OIDC file): JSON, or YAML when not JSON."""

from __future__ import annotations

import json
from typing import Any

from broker.errors import Invalid


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
