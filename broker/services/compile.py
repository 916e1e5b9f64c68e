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
from broker.audit.fingerprint import fingerprints
from broker.compiler import compile as compiler
from broker.compiler.parse import parse_manifest
from broker.compiler.references import StoredValue, referenced_environments, stored_names
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.domain.manifest import Manifest, Problem
from broker.domain.names import check_name, check_slug
from broker.domain.request import Actor, RequestContext, ValueSeen
from broker.domain.scopes import Action
from broker.errors import Invalid, KeyUnavailable, NotFound
from broker.renderers.base import RenderedFile
from broker.repositories import projects as project_repo
from broker.repositories import secrets as repo
from broker.services import audit
from broker.services.auth import require
from broker.services.projects import MAX_DEPTH
from broker.services.runtime import Runtime
from broker.services.secrets import _env, _open, served_as

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


# A current row: (environment id, name, sensitive, version, ciphertext, wrapped DEK, KEK id).
_Row = tuple[int, str, bool, int, bytes, bytes, str, int, bytes | None]


class _Store:
    """The current rows an environment sees (nearest environment wins), decrypted only on request."""

    def __init__(self, project_id: int, project: str, rows: dict[str, _Row], slugs: dict[int, str]) -> None:
        self.project_id = project_id
        self.project = project
        self.rows = rows
        self.slugs = slugs


async def _visible(conn: AsyncConnection, project: str, environment: str) -> _Store:
    project_id, env_id, _ = await _env(conn, project, environment)
    tree = await project_repo.environment_slugs(conn, project_id)
    chain: list[int] = []
    cursor: int | None = env_id
    while cursor is not None and cursor not in chain and len(chain) < MAX_DEPTH:
        chain.append(cursor)
        cursor = tree[cursor][1]
    rows = await repo.current_values(conn, chain)
    if len(chain) > 1:
        rank = {eid: i for i, eid in enumerate(chain)}
        rows = sorted(rows, key=lambda r: rank[r[0]])
    best: dict[str, _Row] = {}
    for row in rows:
        name = row[1]
        if name not in best and row[4] is not None and row[5] is not None and row[6] is not None:
            best[name] = row
    return _Store(project_id, project, best, {eid: tree[eid][0] for eid in chain})


async def _decrypt(
    rt: Runtime, stores: dict[str, _Store], wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredValue]:
    out: dict[tuple[str, str], StoredValue] = {}
    keyring = rt.keys.keyring
    remote = rt.keys.remote
    for environment, name in wanted:
        store = stores.get(environment)
        row = store.rows.get(name) if store is not None else None
        if store is None or row is None:
            continue
        eid, _name, sensitive, version, ct, wrapped, kek, sid, bound = row
        served_as(
            rt,
            bound,
            project_id=store.project_id,
            project=store.project,
            env_id=eid,
            environment=store.slugs[eid],
            secret_id=sid,
            name=name,
            current_version=version,
        )
        text: str | None = None
        if kek not in remote:
            # What secrets._open does for a local KEK, without a coroutine per value.
            aad = secret_aad(project_id=store.project_id, environment_id=eid, name=name, version=version)
            try:
                text = keyring.open(Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad).decode(
                    "utf-8"
                )
            except KeyUnavailable:
                text = None  # secrets._open reloads a rotated keyring file and tries again
        if text is None:  # a blocking KMS or transit call: secrets._open runs it off the event loop
            text = await _open(
                rt,
                project_id=store.project_id,
                env_id=eid,
                name=name,
                version=version,
                ct=ct,
                wrapped=wrapped,
                kek=kek,
            )
            keyring, remote = rt.keys.keyring, rt.keys.remote
        out[(environment, name)] = StoredValue(text, sensitive, version, store.slugs[eid])
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
    # The audit event names every value read, with its keyed fingerprint, never the value: what
    # audit.saw_value notes for one value, here for all of them with one HMAC key set-up.
    prints = fingerprints(rt.keys.audit_key, [seen[key].value for key in ordered])
    ctx.values.extend(
        ValueSeen(env, name, version, fp) for (name, env, version), fp in zip(keys, prints, strict=True)
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
