"""Manifest text -> Manifest, or ManifestError listing every problem with its path (and line).

Per-environment overrides are merged over the base the way Kamal merges `deploy.<destination>.yml` over
`deploy.yml` (mappings merge key by key, everything else is replaced), and each merged result is validated
in full; a problem that comes from an override is reported under `environments/<name>/...`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from broker.compiler import references, yamlsource
from broker.domain.manifest import (
    OVERRIDABLE,
    Manifest,
    ManifestBody,
    ManifestDocument,
    ManifestPath,
    Problem,
    deep_merge,
)
from broker.domain.names import NOT_SHOWN, shown
from broker.errors import Invalid

MAX_SHOWN = 8


class ManifestError(Invalid):
    """The manifest is invalid; `problems` lists each problem, the message shows the first few."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        shown = "; ".join(p.text() for p in problems[:MAX_SHOWN])
        more = len(problems) - MAX_SHOWN
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(f"strongroom.yml is invalid: {shown}{suffix}", field="manifest")
        self.problems = list(problems)


# --- pydantic errors -> problems -----------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            # `bool | Certificate` (proxy.ssl): a key below it belongs to the model member.
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_TYPE_MESSAGES = {
    "missing": "is required",
    "string_type": "must be text",
    "dict_type": "must be a mapping (key: value lines)",
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "list_type": "must be a list",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
}


def _message(error: Mapping[str, Any], root: type[BaseModel], loc: Sequence[str | int]) -> str:
    kind = str(error["type"])
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        known = ", ".join(sorted(model.model_fields)) if model else ""
        return f"unknown key (expected one of: {known})" if known else "unknown key"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    return str(error["msg"]).replace("Input should be", "must be").replace("String should", "must")


def _loc(raw: Sequence[Any], tree: Any) -> ManifestPath:
    # Pydantic marks an invalid mapping key with a trailing "[key]"; the key itself is the path.
    loc = tuple(p for p in raw if p != "[key]")
    node = tree
    for i, part in enumerate(loc):
        if isinstance(node, str):
            # A scalar the models expanded (a bare host for {host: ...}): the scalar is what is wrong.
            return loc[:i]
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    return loc


def _validate(model: type[BaseModel], data: Any) -> tuple[Any, list[tuple[ManifestPath, str]]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        found = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = _loc(error["loc"], data)
            found.append((loc, _message(error, model, loc)))
        return None, found


def _line_of(lines: Mapping[ManifestPath, int], path: ManifestPath) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _in_tree(tree: Any, path: ManifestPath) -> bool:
    node = tree
    for part in path:
        if isinstance(node, Mapping) and isinstance(part, str) and part in node:
            node = node[part]
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        return False
    return True


def _shown_path(path: ManifestPath, tree: Any) -> ManifestPath:
    """`path` as an error may show it: a key that is not a plain name (`shown`) is described by its
    position in its mapping, so the manifest's own text never reaches the client or the audit trail."""
    out: list[str | int] = []
    node = tree
    for part in path:
        if isinstance(part, int) or shown(part) == part:
            out.append(part)
        elif isinstance(node, Mapping) and part in node:
            keys = list(node)
            out.append(f"(key {keys.index(part) + 1} of {len(keys)}, its name not shown)")
        else:
            out.append(NOT_SHOWN)
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


# --- semantic checks -------------------------------------------------------------------------------


def _semantic(body: ManifestBody, tags_to_check: set[str] | None = None) -> list[tuple[ManifestPath, str]]:
    found: list[tuple[ManifestPath, str]] = []
    for name, accessory in body.accessories.items():
        for i, role in enumerate(accessory.roles or []):
            if role not in body.roles:
                found.append((("accessories", name, "roles", i), f"role {role} is not defined under roles"))
    tags = {tag for role in body.roles.values() for host in role.hosts for tag in host.tags}
    # An environment whose hosts lack a tag the base uses is fine (overrides cannot delete the base's tag).
    checked = set(body.env.tags) if tags_to_check is None else tags_to_check
    for tag in sorted(checked - tags):
        found.append((("env", "tags", tag), "no host under roles carries this tag"))
    for path, _name, template in references.clear_templates(body):
        try:
            references.parse(template)
        except references.TemplateError as exc:
            found.append((path, exc.reason))
    return found


# --- entry point ---------------------------------------------------------------------------------------


def parse_manifest(text: str) -> Manifest:
    """Validate manifest text and every environment's merged view, or raise ManifestError."""
    try:
        # Without the line of every node: a valid manifest never needs them (read again below if not).
        doc = yamlsource.load(text, with_lines=False)
    except yamlsource.SourceError as exc:
        # A duplicate key is named in its path; no tree yet to tell its position.
        raise ManifestError([replace(p, path=_shown_path(p.path, None)) for p in exc.problems]) from None
    tree = doc.tree
    if not isinstance(tree, dict):
        raise ManifestError([Problem((), "must be a mapping with at least a service key", 1)])
    found: list[tuple[ManifestPath, str]] = []

    def add(path: ManifestPath, message: str) -> None:
        found.append((path, message))

    head = {k: tree[k] for k in ("project", "environments") if k in tree}
    body_raw = {k: v for k, v in tree.items() if k not in head}
    document, errors = _validate(ManifestDocument, head)
    for loc, message in errors:
        add(loc, message)
    base, errors = _validate(ManifestBody, body_raw)
    if base is not None:
        errors += _semantic(base)
    for loc, message in errors:
        add(loc, message)
    seen = set(errors)

    merged: dict[str, ManifestBody] = {}
    overrides = head.get("environments")
    if isinstance(overrides, dict):
        for env, raw_override in overrides.items():
            prefix: ManifestPath = ("environments", env)
            if not isinstance(raw_override, dict) or not references.is_slug(env):
                continue  # reported by the document's own validation
            bad = [k for k in raw_override if k not in OVERRIDABLE]
            for key in bad:
                rule = "cannot be set per environment" if key in ("project", "environments") else None
                add(
                    (*prefix, key), rule or f"unknown key (expected one of: {', '.join(sorted(OVERRIDABLE))})"
                )
            override = {k: v for k, v in raw_override.items() if k not in bad}
            view, errors = _validate(ManifestBody, deep_merge(body_raw, override))
            env_part = override.get("env")
            own_tags = env_part.get("tags") if isinstance(env_part, dict) else None
            semantic = _semantic(view, set(own_tags) if isinstance(own_tags, dict) else set()) if view else []
            for loc, message in errors + semantic:
                if (loc, message) in seen:
                    continue  # the base's own problem, already reported once
                if _in_tree(override, loc):
                    add((*prefix, *loc), message)
                elif base is not None:
                    # Valid in the base, broken only in combination with this override.
                    add((*prefix, *loc), f"{message} (after merging this environment's overrides)")
            if view is not None:
                merged[env] = view
    if found:
        lines = yamlsource.load(text).lines
        problems = [
            Problem(_shown_path(path, tree), message, _line_of(lines, path)) for path, message in found
        ]
        raise ManifestError(sorted(problems, key=lambda p: p.line or 0))
    assert document is not None and base is not None
    return Manifest(project=document.project, base=base, environments=merged)
