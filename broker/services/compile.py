"""Compile a manifest against stored values; check it; read named values; compare two environments.

The manifest arrives as text and holds no values. The broker reads and decrypts only the stored values the
manifest needs (its secrets and what its clear values reference, in this or another environment), renders
the requested targets, and commits the request's audit event, naming every key read, before any file
leaves. A compile that fails (an invalid manifest, a missing key, a value a target cannot carry) returns
no file.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.fingerprint import fingerprint as value_fingerprint
from broker.compiler import compile as compiler
from broker.compiler.parse import parse_manifest
from broker.compiler.references import StoredValue, referenced_environments, stored_names
from broker.domain.inheritance import Seen, StoredRow
from broker.domain.manifest import Manifest, Problem
from broker.domain.names import check_name, check_slug
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action
from broker.errors import Invalid, NotFound
from broker.renderers.base import RenderedFile
from broker.services import audit, visible
from broker.services.auth import require
from broker.services.runtime import Runtime

MAX_NAMES = 1000
MAX_TARGETS = 16


class KeyRead(NamedTuple):
    """One stored value a request read: its name, where it came from and which version."""

    name: str
    environment: str
    version: int


@dataclass(frozen=True)
class CompileResult:
    """Rendered files and the warnings (lint findings in warn mode) that did not stop the compile."""

    files: list[RenderedFile] = field(repr=False)
    warnings: list[Problem]
    keys: list[KeyRead]


@dataclass(frozen=True)
class CheckResult:
    """Every problem a compile of these targets would meet; no value leaves."""

    problems: list[Problem]
    keys: list[KeyRead]


@dataclass(frozen=True)
class NamedValue:
    """A value read by name (inheritance applied)."""

    value: str = field(repr=False)
    version: int
    environment: str
    sensitive: bool


@dataclass(frozen=True)
class Fingerprint:
    """A keyed hash standing for a value in a comparison; never the value."""

    fingerprint: str
    version: int
    environment: str


@dataclass(frozen=True)
class Diff:
    """Two environments compared by name and by fingerprint."""

    only_in_a: list[str]
    only_in_b: list[str]
    different: list[tuple[str, Fingerprint, Fingerprint]]
    same: list[str]


# --- reading stored values ---------------------------------------------------------------------------


# What an environment sees, still sealed (deploys.py builds an empty one for an environment that does not exist).
_Store = visible.Visible


async def _visible(conn: AsyncConnection, project: str, environment: str) -> _Store:
    return await visible.load(conn, project, environment)


async def _decrypt(
    rt: Runtime, stores: dict[str, _Store], wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredValue]:
    """The wanted (environment, name) values each store shows, decrypted; names it lacks are left out."""
    picked: dict[str, dict[str, Seen[StoredRow]]] = {}
    for environment, name in wanted:
        store = stores.get(environment)
        seen = store.rows.get(name) if store is not None else None
        if seen is not None:
            picked.setdefault(environment, {})[name] = seen
    out: dict[tuple[str, str], StoredValue] = {}
    for environment, by_name in picked.items():
        store = stores[environment]
        seen_list = list(by_name.values())
        texts = await visible.reveal(rt, project_id=store.project_id, project=store.project, seen=seen_list)
        for seen, text in zip(seen_list, texts, strict=True):
            out[(environment, seen.row.name)] = StoredValue(
                text, seen.row.sensitive, seen.row.version, seen.environment
            )
    return out


def _database_only(rt: Runtime, project: str) -> None:
    if rt.backends is not None and project in rt.backends.projects:
        raise Invalid(
            f"projects/{project}: its secrets are kept in an external backend, which compile does not read yet",
            field="project",
        )


def _keys(
    rt: Runtime,
    ctx: RequestContext,
    values: dict[tuple[str, str], StoredValue],
    used: Iterable[tuple[str, str]],
) -> list[KeyRead]:
    """The keys read (each stored value once, where it is stored), noted in the request's audit event."""
    seen: dict[tuple[str, str], StoredValue] = {}
    for key in used:
        stored = values.get(key)
        if stored is not None:
            seen.setdefault((stored.environment, key[1]), stored)
    ordered = sorted(seen)
    keys = [KeyRead(name, env, seen[env, name].version) for env, name in ordered]
    # The audit event names every value read, with its keyed fingerprint, never the value.
    visible.note(
        rt, ctx, [(env, name, version) for name, env, version in keys], [seen[key].value for key in ordered]
    )
    return keys


# --- compile and check -----------------------------------------------------------------------------------


def _parse(project: str, manifest_text: str) -> Manifest:
    manifest = parse_manifest(manifest_text)
    if manifest.project is not None and manifest.project != project:
        raise Invalid(
            f"project: strongroom.yml is for project {manifest.project}, not {project}", field="project"
        )
    return manifest


async def _compile(
    rt: Runtime, actor: Actor, conn: AsyncConnection, *, project: str, environment: str, manifest: Manifest
) -> tuple[compiler.Compiled, dict[tuple[str, str], StoredValue]]:
    environments = referenced_environments(manifest, environment)
    for other in environments:
        require(actor, Action.READ, project, other)
    stores = {environment: await _visible(conn, project, environment)}
    for other in environments[1:]:
        try:
            stores[other] = await _visible(conn, project, other)
        except NotFound:
            stores[other] = _Store(0, project, {}, {})  # its references then fail with a problem naming them
    values = await _decrypt(rt, stores, stored_names(manifest, environment))
    compiled = compiler.compile_environment(manifest, environment, lambda e, n: values.get((e, n)))
    return compiled, values


async def compile_manifest(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    manifest: str,
    targets: Sequence[str],
    role: str | None,
) -> CompileResult:
    """Render `targets` for `environment`; its audit event, naming the keys read, commits before any file leaves."""
    ctx.about("compile", project=project[:64], environment=environment[:64])
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    names = compiler.check_targets(targets)
    if not names:
        raise Invalid("targets: name at least one target", field="targets")
    parsed = _parse(project, manifest)
    require(actor, Action.READ, project, environment)
    _database_only(rt, project)
    async with rt.engine.begin() as conn:
        compiled, values = await _compile(
            rt, actor, conn, project=project, environment=environment, manifest=parsed
        )
        errors = compiled.errors
        if errors:
            raise Invalid(_sentence(errors), field="manifest")
        files = compiler.render(compiled, names, role=role)
        keys = _keys(rt, ctx, values, compiled.reads)
        await audit.record(conn, rt, ctx)
    return CompileResult(files, [p for p in compiled.problems if p.level == "warning"], keys)


async def check_manifest(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    manifest: str,
    targets: Sequence[str],
    role: str | None,
) -> CheckResult:
    """Every problem a compile would meet: manifest, missing or empty keys, references, lint, targets."""
    ctx.about("compile.check", project=project[:64], environment=environment[:64])
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    names = compiler.check_targets(targets)
    parsed = _parse(project, manifest)
    require(actor, Action.READ, project, environment)
    _database_only(rt, project)
    async with rt.engine.begin() as conn:
        compiled, values = await _compile(
            rt, actor, conn, project=project, environment=environment, manifest=parsed
        )
        problems = list(compiled.problems)
        if not compiled.errors:
            problems += compiler.target_problems(compiled, names, role=role)
        keys = _keys(rt, ctx, values, compiled.reads)
        await audit.record(conn, rt, ctx)
    return CheckResult(problems, keys)


def _sentence(problems: Sequence[Problem]) -> str:
    shown = "; ".join(p.text() for p in problems[:5])
    more = f"; and {len(problems) - 5} more (run strongroom check)" if len(problems) > 5 else ""
    return f"cannot compile: {shown}{more}"


# --- named values (strongroom kamal fetch) -----------------------------------------------------------------


async def read_values(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, names: Sequence[str]
) -> dict[str, NamedValue]:
    """The named values as the environment sees them (inheritance applied); all of them or NotFound."""
    ctx.about("secret.read_many", project=project[:64], environment=environment[:64])
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    if not 1 <= len(names) <= MAX_NAMES:
        raise Invalid(f"names: give between 1 and {MAX_NAMES} names", field="names")
    for i, name in enumerate(names):
        check_name(name, field=f"names/{i}")
    for name in names:
        require(actor, Action.READ, project, environment, key=name)
    _database_only(rt, project)
    async with rt.engine.begin() as conn:
        store = await _visible(conn, project, environment)
        missing = [n for n in names if n not in store.rows]
        if missing:
            raise NotFound(
                f"projects/{project}/environments/{environment}: no secret {missing[0]} "
                f"(nor in the environments it inherits){f', and {len(missing) - 1} more' if len(missing) > 1 else ''}"
            )
        values = await _decrypt(rt, {environment: store}, [(environment, n) for n in names])
        _keys(rt, ctx, values, [(environment, n) for n in names])
        await audit.record(conn, rt, ctx)
    return {
        n: NamedValue(v.value, v.version, v.environment, v.sensitive) for (_e, n), v in sorted(values.items())
    }


# --- diff ------------------------------------------------------------------------------------------------------


async def diff_environments(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, a: str, b: str
) -> Diff:
    """Keys only in one environment, and keys whose values differ, shown by fingerprint (never a value)."""
    # The fingerprints are the audit trail's (HMAC-SHA256 under the audit key, held outside the database):
    # equal values give equal ones, and an auditor can match them with the events that served the values.
    ctx.about("secret.diff", project=project[:64], environment=a[:64])
    check_slug(project, field="project")
    check_slug(a, field="a")
    check_slug(b, field="b")
    require(actor, Action.READ, project, a)
    require(actor, Action.READ, project, b)
    _database_only(rt, project)
    async with rt.engine.begin() as conn:
        stores = {a: await _visible(conn, project, a), b: await _visible(conn, project, b)}
        both = set(stores[a].rows) & set(stores[b].rows)
        values = await _decrypt(rt, stores, [(env, n) for env in (a, b) for n in both])
        _keys(rt, ctx, values, values)
        await audit.record(conn, rt, ctx)

    def fingerprint(env: str, name: str) -> Fingerprint:
        stored = values[(env, name)]
        return Fingerprint(
            value_fingerprint(rt.keys.audit_key, stored.value), stored.version, stored.environment
        )

    different = []
    same = []
    for name in sorted(both):
        fa, fb = fingerprint(a, name), fingerprint(b, name)
        if hmac.compare_digest(fa.fingerprint, fb.fingerprint):
            same.append(name)
        else:
            different.append((name, fa, fb))
    return Diff(
        only_in_a=sorted(set(stores[a].rows) - both),
        only_in_b=sorted(set(stores[b].rows) - both),
        different=different,
        same=same,
    )
