"""Deploys: a plan and a deploy token bound to it, the bundle of values it may read, the ledger, status.

A deploy starts with the caller's manifest: the broker parses it as compile does, works out the keys
the plan reads (the env files of the selected roles and host tags, the registry password, the build
secrets, and whatever their clear values reference, per environment; for a deploy via Kamal, exactly the
secret names `.kamal/secrets.<env>` fetches: see `_plan`), checks the caller may read each,
and mints a deploy token: a child of the caller's token that can read only those keys, lives at most
`ttl_seconds` (never past its parent), has a use limit, and may call the bundle, host and finish routes
of this deploy only. The bundle renders each host's env file with the env-file renderer from values
resolved as the compiler resolves them; the ledger keeps the versions served and their audit
fingerprints, never a value. Finishing revokes the deploy token and its children.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.fingerprint import fingerprint as value_fingerprint
from broker.compiler import compile as compiler
from broker.compiler.references import GLOBAL, StoredValue
from broker.db.base import DbRow
from broker.domain.manifest import EnvSection, Manifest, ManifestBody, check_host
from broker.domain.names import check_slug
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action, Scope, allowed
from broker.errors import Conflict, Forbidden, Invalid, NotFound
from broker.renderers.base import Entry, RenderOptions
from broker.renderers.registry import get_renderer
from broker.repositories import deploys as repo
from broker.repositories import identities as token_repo
from broker.services import audit
from broker.services.auth import IssuedToken, issue_child, require
from broker.services.compile import _database_only, _decrypt, _parse, _sentence, _Store, _visible
from broker.services.runtime import Runtime
from broker.services.stores.base import require_environment

TTL_MIN, TTL_MAX = 60, 3600
LIST_MAX = 100
BASE_USES = 4  # bundle, finish, and room for a retry of each
MIN_REDACTED = 4  # shorter values would blank out ordinary words in an error message
_PLACEHOLDER = "\x00not read for this plan"

Key = tuple[str, str]  # (environment, name)


@dataclass(frozen=True)
class Target:
    """One host of one role (a host may serve several roles), with its tags."""

    host: str
    role: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a deploy reaches: its targets, the keys of each target's env file, and the build/registry keys."""

    manifest: Manifest
    body: ManifestBody
    environment: str
    targets: list[Target]
    env_keys: dict[Target, frozenset[Key]]
    extra_keys: frozenset[Key]
    via: str = "ssh"

    @property
    def keys(self) -> list[Key]:
        """Every key the plan reads, sorted."""
        out: set[Key] = set(self.extra_keys)
        for keys in self.env_keys.values():
            out |= keys
        return sorted(out)


@dataclass(frozen=True)
class DeployInfo:
    """A ledger row of a deploy."""

    id: str
    project: str
    environment: str
    service: str
    version: str
    kind: str
    via: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    by: str


@dataclass(frozen=True)
class HostRecord:
    """What a deploy did on one host."""

    host: str
    role: str
    outcome: str
    container: str | None
    image_digest: str | None
    env_fingerprint: str | None
    error: str | None
    at: datetime


@dataclass(frozen=True)
class ServedKey:
    """A secret version served to a deploy, by fingerprint."""

    environment: str
    name: str
    version: int
    fingerprint: str


@dataclass(frozen=True)
class HostKey:
    """A secret version one host (in one role) got in its env file, by fingerprint."""

    host: str
    role: str
    environment: str
    name: str
    version: int
    fingerprint: str


@dataclass(frozen=True)
class DeployDetail:
    """A deploy with its host outcomes, served keys, and the keys each host's env file got."""

    deploy: DeployInfo
    hosts: list[HostRecord]
    keys: list[ServedKey]
    host_keys: list[HostKey]


@dataclass(frozen=True)
class Started:
    """A started deploy: its row, its token (shown once) and its plan."""

    deploy: DeployInfo
    token: IssuedToken
    plan: Plan
    uses: int

    def __repr__(self) -> str:
        return f"Started(deploy={self.deploy.id!r}, token=***)"


@dataclass(frozen=True)
class HostFile:
    """One host's env file and its keyed fingerprint."""

    host: str
    role: str
    env_file: str = field(repr=False)
    env_fingerprint: str


@dataclass(frozen=True)
class Bundle:
    """The values a deploy needs, rendered; served once with no-store."""

    hosts: list[HostFile]
    registry_password: str | None = field(repr=False)
    build_secrets: dict[str, str] = field(repr=False)
    keys: list[ServedKey]


@dataclass(frozen=True)
class Rotated:
    """A key whose value changed since the host's last deploy."""

    name: str
    deployed_version: int
    current_version: int | None


@dataclass(frozen=True)
class LedgerEntry:
    """A host's ledger row with its deploy's id, version and author."""

    record: HostRecord
    deploy_id: str
    version: str
    by: str


@dataclass(frozen=True)
class HostStatus:
    """One host: its last success, its last attempt, what its role runs elsewhere, and what would be deployed now.

    `attempt` is the newest row of any outcome (the same row as `last` when that attempt succeeded), or a
    newer deploy that targeted the host and never reported it (outcome `running` or `abandoned`);
    `behind` is the newest row that deployed another version to a host of the same role after `last`.
    """

    host: str
    role: str
    last: LedgerEntry | None
    expected_env_fingerprint: str
    rotated: list[Rotated]
    attempt: LedgerEntry | None = None
    behind: LedgerEntry | None = None


# --- the plan ---------------------------------------------------------------------------------------------------


def _targets(body: ManifestBody, environment: str, hosts: Sequence[str] | None) -> list[Target]:
    targets = [
        Target(entry.host, role, tuple(entry.tags))
        for role, spec in body.roles.items()
        for entry in spec.hosts
    ]
    if hosts is not None:
        known = {t.host for t in targets}
        for i, host in enumerate(hosts):
            try:
                check_host(host)
            except ValueError as exc:
                raise Invalid(f"hosts[{i}]: {exc}", field=f"hosts[{i}]") from None
            if host not in known:
                raise Invalid(
                    f"hosts[{i}]: not a host of any role in the manifest for {environment}",
                    field=f"hosts[{i}]",
                )
        wanted = set(hosts)
        targets = [t for t in targets if t.host in wanted]
    if not targets:
        raise Invalid(f"manifest: no role has a host to deploy to in {environment}", field="manifest")
    return targets


VIAS = ("ssh", "kamal")


def _sections(body: ManifestBody, target: Target) -> list[EnvSection]:
    """The env sections a target's env file is made of: global, its role's, its tags'."""
    sections = [body.env, body.roles[target.role].env]
    return sections + [body.env.tags[t] for t in target.tags if t in body.env.tags]


def _plan(manifest: Manifest, environment: str, hosts: Sequence[str] | None, *, via: str) -> Plan:
    """The plan and its keys, found by compiling once with every stored value standing in (nothing is read).

    The one place that decides what a deploy token may read. `ssh` (Strongroom's driver): each target's env
    file (its sections' secrets and whatever their clear values reference), the registry password and the
    build secrets. `kamal`: exactly what the compiled `.kamal/secrets.<env>` fetches, every secret name of
    the manifest in this environment (env sections of roles, tags and accessories, registry, build,
    proxy/ssl's PEMs); Kamal's clear values were compiled into config/deploy.yml with the caller's token.
    """
    if via not in VIAS:
        raise Invalid("via: must be ssh or kamal", field="via")
    body = manifest.for_environment(environment)
    if body.image is None:
        raise Invalid("image: the manifest needs an image to deploy", field="image")
    targets = _targets(body, environment, hosts)
    dry = compiler.compile_environment(manifest, environment, lambda e, n: StoredValue("x", True, 0, e))
    if dry.errors:
        raise Invalid(_sentence(dry.errors), field="manifest")
    env_keys: dict[Target, frozenset[Key]] = {}
    for target in targets:
        keys: set[Key] = set()
        if via == "ssh":
            scopes = [GLOBAL, ("role", target.role), *(("tag", t) for t in target.tags)]
            for scope in scopes:
                for resolved in dry.clear.get(scope, {}).values():
                    keys |= resolved.reads
        for section in _sections(body, target):
            keys |= {(environment, name) for name in section.secret}
        env_keys[target] = frozenset(keys)
    extra: set[Key] = set()
    if via == "kamal":
        extra = {(environment, name) for name in body.secret_names()}
    if body.registry is not None:
        extra.add((environment, body.registry.password))
    if body.builder is not None:
        extra |= {(environment, name) for name in body.builder.secrets}
    return Plan(manifest, body, environment, targets, env_keys, frozenset(extra), via)


def _token_scopes(project: str, keys: Iterable[Key], environment: str) -> tuple[Scope, ...]:
    by_env: dict[str, set[str]] = {environment: set()}
    for env, name in keys:
        by_env.setdefault(env, set()).add(name)
    return tuple(
        Scope(project=project, environments=env, actions=frozenset({Action.READ}), keys=frozenset(names))
        for env, names in by_env.items()
    )


async def _stores(
    conn: AsyncConnection, project: str, environment: str, keys: Iterable[Key]
) -> dict[str, _Store]:
    stores = {environment: await _visible(conn, project, environment)}
    for env in sorted({e for e, _n in keys} - {environment}):
        try:
            stores[env] = await _visible(conn, project, env)
        except NotFound:
            stores[env] = _Store(0, project, {}, {})  # its keys then fail with a problem naming them
    return stores


async def _resolve(
    rt: Runtime, conn: AsyncConnection, project: str, plan: Plan
) -> tuple[compiler.Compiled, dict[Key, StoredValue]]:
    """Decrypt exactly the plan's keys and compile; keys outside the plan get a stand-in that is never rendered."""
    keys = set(plan.keys)
    stores = await _stores(conn, project, plan.environment, keys)
    values = await _decrypt(rt, stores, sorted(keys))

    def lookup(environment: str, name: str) -> StoredValue | None:
        if (environment, name) in keys:
            return values.get((environment, name))
        return StoredValue(_PLACEHOLDER, True, 0, environment)

    compiled = compiler.compile_environment(plan.manifest, plan.environment, lookup)
    if compiled.errors:
        raise Invalid(_sentence(compiled.errors), field="manifest")
    return compiled, values


def _entries(compiled: compiler.Compiled, target: Target, *, via: str) -> list[Entry]:
    """The role's variables (compiler.entries) with each of the host's tags over them, in tag order.

    Via Kamal, a clear value built from a key the plan does not read is left out: Kamal has it from
    config/deploy.yml, and the deploy token may not read what it references.
    """
    out = {entry.name: entry for entry in compiled.entries(target.role)}
    for tag in target.tags:
        section = compiled.body.env.tags.get(tag)
        if section is None:
            continue
        for name in section.secret:
            out.pop(name, None)
            if name in compiled.secrets:
                out[name] = Entry(name, compiled.secrets[name].value, sensitive=True)
        for name in section.clear:
            out.pop(name, None)
            resolved = compiled.clear.get(("tag", tag), {}).get(name)
            if resolved is not None:
                out[name] = Entry(name, resolved.value, sensitive=resolved.sensitive)
    if via == "kamal":
        out = {name: entry for name, entry in out.items() if _PLACEHOLDER not in entry.value}
    return [out[name] for name in sorted(out)]


def _env_files(rt: Runtime, compiled: compiler.Compiled, plan: Plan) -> list[HostFile]:
    renderer = get_renderer("env-file")
    options = RenderOptions(environment=plan.environment, service=plan.body.service)
    files = []
    for target in plan.targets:
        try:
            entries = _entries(compiled, target, via=plan.via)
            (rendered,) = renderer.render(entries, options=options)
        except Invalid as exc:
            raise Invalid(
                f"hosts/{target.host} (role {target.role}): {exc.message}", field="manifest"
            ) from None
        text = rendered.content.decode("utf-8")
        files.append(HostFile(target.host, target.role, text, value_fingerprint(rt.keys.audit_key, text)))
    return files


def _served(
    rt: Runtime, ctx: RequestContext, values: dict[Key, StoredValue], keys: Iterable[Key]
) -> list[ServedKey]:
    """The keys read, each noted in the request's audit event by fingerprint."""
    out = []
    for env, name in sorted(keys):
        stored = values.get((env, name))
        if stored is None:
            continue
        audit.saw_value(
            rt, ctx, environment=stored.environment, name=name, version=stored.version, value=stored.value
        )
        out.append(ServedKey(env, name, stored.version, value_fingerprint(rt.keys.audit_key, stored.value)))
    return out


async def _redact(rt: Runtime, conn: AsyncConnection, project: str, plan: Plan, text: str) -> str:
    """The text with every value the plan reads replaced (the CLI redacts too; the ledger must not rely on it)."""
    stores = await _stores(conn, project, plan.environment, plan.keys)
    values = await _decrypt(rt, stores, plan.keys)
    # Longest first, so a value containing another is replaced whole.
    for stored in sorted(values.values(), key=lambda v: len(v.value), reverse=True):
        if len(stored.value) >= MIN_REDACTED:
            text = text.replace(stored.value, "[REDACTED]")
    return text


# --- rows -------------------------------------------------------------------------------------------------------


def _status(row: DbRow, now: datetime) -> str:
    """The stored status, or `abandoned` for a running deploy whose token can no longer finish it."""
    if row.status != "running":
        return str(row.status)
    dead = (
        row.token_revoked_at is not None
        or row.token_expires_at is None
        or row.token_expires_at <= now
        or row.token_uses_remaining == 0
    )
    return "abandoned" if dead else "running"


def _info(row: DbRow, now: datetime) -> DeployInfo:
    return DeployInfo(
        id=row.id,
        project=row.project,
        environment=row.environment,
        service=row.service,
        version=row.version,
        kind=row.kind,
        via=row.via,
        status=_status(row, now),
        started_at=row.started_at,
        finished_at=row.finished_at,
        by=row.principal_name,
    )


def _host(row: DbRow) -> HostRecord:
    return HostRecord(
        row.host,
        row.role,
        row.outcome,
        row.container,
        row.image_digest,
        row.env_fingerprint,
        row.error,
        row.at,
    )


def _check_where(ctx: RequestContext, action: str, project: str, environment: str) -> None:
    ctx.about(action, project=project[:64], environment=environment[:64])
    check_slug(project, field="project")
    check_slug(environment, field="environment")


def _may_know_any(actor: Actor) -> bool:
    # Only a token that could read every deploy learns whether an id it cannot read exists.
    return allowed(actor.scopes, Action.READ, "*", "*") and any(
        s.project == "*" and s.environments == "*" and s.keys is None and not s.deny for s in actor.scopes
    )


async def _load(conn: AsyncConnection, actor: Actor, ctx: RequestContext, deploy_id: str) -> DbRow:
    row = await repo.get_deploy(conn, deploy_id) if len(deploy_id) <= 36 else None
    if row is None:
        if _may_know_any(actor):
            raise NotFound(f"deploys/{deploy_id[:36]}: no such deploy")
        raise Forbidden(f"this token does not grant read on deploys/{deploy_id[:36]}")
    ctx.project, ctx.environment = row.project, row.environment
    return row


async def _bound(conn: AsyncConnection, actor: Actor, ctx: RequestContext, deploy_id: str) -> DbRow:
    """The deploy, if the caller is its deploy token and it is still running."""
    row = await _load(conn, actor, ctx, deploy_id)
    if not hmac.compare_digest(row.token_accessor, actor.accessor):
        raise Forbidden(f"deploys/{row.id}: only this deploy's token may call this route")
    if row.status != "running":
        raise Conflict(f"deploys/{row.id}: already finished ({row.status})")
    return row


# --- the routes -------------------------------------------------------------------------------------------------


async def start(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    manifest: str,
    version: str,
    ttl_seconds: int,
    hosts: Sequence[str] | None,
    kind: str,
    via: str,
) -> Started:
    """Record a running deploy and mint its deploy token (a child of the caller's, reading only the plan's keys)."""
    _check_where(ctx, "deploy.create", project, environment)
    if not TTL_MIN <= ttl_seconds <= TTL_MAX:
        raise Invalid(f"ttl_seconds: must be between {TTL_MIN} and {TTL_MAX}", field="ttl_seconds")
    require(actor, Action.READ, project, environment)
    parsed = _parse(project, manifest)
    _database_only(rt, project)
    plan = _plan(parsed, environment, hosts, via=via)
    for env, name in plan.keys:
        require(actor, Action.READ, project, env, key=name)
    uses = BASE_USES + 2 * len(plan.targets)
    now = rt.clock()
    deploy_id = str(uuid.uuid4())
    async with rt.engine.begin() as conn:
        stores = await _stores(conn, project, environment, plan.keys)
        missing = [f"{e}/{n}" for e, n in plan.keys if n not in stores[e].rows]
        if missing:
            more = f", and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise Invalid(
                f"manifest: the plan reads {missing[0]}, which is not stored (nor inherited){more}",
                field="manifest",
            )
        issued = await issue_child(
            conn,
            rt,
            actor,
            scopes=_token_scopes(project, plan.keys, environment),
            ttl=ttl_seconds,
            num_uses=uses,
        )
        await repo.add_deploy(
            conn,
            id=deploy_id,
            project=project,
            environment=environment,
            service=plan.body.service,
            version=version,
            kind=kind,
            via=via,
            status="running",
            started_at=now,
            finished_at=None,
            principal_id=actor.principal_id,
            principal_name=actor.name,
            token_accessor=issued.info.accessor,
            manifest_digest="sha256:" + hashlib.sha256(manifest.encode("utf-8", "surrogatepass")).hexdigest(),
            manifest=manifest,
            hosts=list(hosts) if hosts is not None else None,
        )
        row = await repo.get_deploy(conn, deploy_id)
        assert row is not None
        ctx.reason = f"via {via}: the deploy token reads {len(plan.keys)} keys"
        await audit.record(conn, rt, ctx, status=201)
    return Started(_info(row, rt.clock()), issued, plan, uses)


async def bundle(rt: Runtime, ctx: RequestContext, actor: Actor, *, deploy_id: str) -> Bundle:
    """Each host's env file, the registry password and build secrets; the versions served go in the ledger."""
    ctx.about("deploy.bundle")
    async with rt.engine.begin() as conn:
        row = await _bound(conn, actor, ctx, deploy_id)
        plan = _plan(_parse(row.project, row.manifest), row.environment, row.hosts, via=row.via)
        for env, name in plan.keys:
            require(actor, Action.READ, row.project, env, key=name)
        compiled, values = await _resolve(rt, conn, row.project, plan)
        files = _env_files(rt, compiled, plan)
        served = _served(rt, ctx, values, plan.keys)
        # What the deploy was served; each host's share goes in the ledger only once it reports it deployed.
        await repo.set_keys(conn, row.id, [(k.environment, k.name, k.version, k.fingerprint) for k in served])
        await audit.record(conn, rt, ctx)
    body = plan.body
    env = plan.environment
    password = values[(env, body.registry.password)].value if body.registry is not None else None
    build = (
        {name: values[(env, name)].value for name in body.builder.secrets} if body.builder is not None else {}
    )
    return Bundle(files, password, build, served)


async def report_host(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    deploy_id: str,
    host: str,
    role: str,
    outcome: str,
    container: str | None,
    image_digest: str | None,
    env_fingerprint: str | None,
    error: str | None,
) -> HostRecord:
    """Add a host's outcome to the ledger."""
    ctx.about("deploy.host")
    if error is not None and len(error) > 2000:
        raise Invalid("error: at most 2000 characters", field="error")
    async with rt.engine.begin() as conn:
        row = await _bound(conn, actor, ctx, deploy_id)
        plan = _plan(_parse(row.project, row.manifest), row.environment, row.hosts, via=row.via)
        target = next((t for t in plan.targets if t.host == host and t.role == role), None)
        if target is None:
            raise Invalid("host: not a host of that role in this deploy's plan", field="host")
        if error:
            error = await _redact(rt, conn, row.project, plan, error)
        # The ledger says a host holds keys only when it ran them: a failed, skipped or unreachable host got
        # nothing (a later report of the same host replaces an earlier one's keys).
        served = {(k.environment, k.name): k for k in await repo.keys_of(conn, row.id)}
        wanted = sorted(plan.env_keys[target])
        if outcome == "deployed" and wanted and not served:
            raise Conflict(
                f"deploys/{row.id}: {host} cannot have been deployed before the bundle was fetched"
            )
        held = [served[key] for key in wanted if key in served]
        await repo.set_host_keys(
            conn,
            row.id,
            host,
            role,
            [(k.environment, k.name, k.version, k.fingerprint) for k in held]
            if outcome == "deployed"
            else [],
        )
        now = rt.clock()
        await repo.add_host(
            conn,
            deploy_id=row.id,
            host=host,
            role=role,
            outcome=outcome,
            container=container,
            image_digest=image_digest,
            env_fingerprint=env_fingerprint,
            error=error,
            at=now,
        )
        await audit.record(conn, rt, ctx, status=201)
    return HostRecord(host, role, outcome, container, image_digest, env_fingerprint, error, now)


async def finish(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, deploy_id: str, outcome: str
) -> DeployInfo:
    """Mark the deploy finished and revoke its token (and the token's children)."""
    ctx.about("deploy.finish")
    if outcome not in ("succeeded", "failed", "partial"):
        raise Invalid("outcome: must be succeeded, failed or partial", field="outcome")
    async with rt.engine.begin() as conn:
        row = await _bound(conn, actor, ctx, deploy_id)
        now = rt.clock()
        if not await repo.finish(conn, row.id, status=outcome, now=now):
            raise Conflict(f"deploys/{row.id}: already finished")
        await token_repo.revoke_tree(conn, [actor.token_id], now)
        done = await repo.get_deploy(conn, row.id)
        assert done is not None
        await audit.record(conn, rt, ctx)
    return _info(done, rt.clock())


async def list_deploys(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, limit: int
) -> list[DeployInfo]:
    """An environment's deploys, newest first."""
    _check_where(ctx, "deploy.list", project, environment)
    if not 1 <= limit <= LIST_MAX:
        raise Invalid(f"limit: must be between 1 and {LIST_MAX}", field="limit")
    require(actor, Action.READ, project, environment)
    async with rt.engine.begin() as conn:
        # NotFound for an environment that does not exist.
        await require_environment(conn, project, environment)
        rows = await repo.list_deploys(conn, project, environment, limit)
        await audit.record(conn, rt, ctx)
    now = rt.clock()
    return [_info(r, now) for r in rows]


async def get_deploy(rt: Runtime, ctx: RequestContext, actor: Actor, *, deploy_id: str) -> DeployDetail:
    """One deploy with its host outcomes and served keys (read on its environment)."""
    ctx.about("deploy.read")
    async with rt.engine.begin() as conn:
        row = await _load(conn, actor, ctx, deploy_id)
        require(actor, Action.READ, row.project, row.environment)
        hosts = await repo.hosts_of(conn, row.id)
        keys = await repo.keys_of(conn, row.id)
        host_keys = await repo.host_keys_all(conn, row.id)
        await audit.record(conn, rt, ctx)
    return DeployDetail(
        _info(row, rt.clock()),
        [_host(h) for h in hosts],
        [ServedKey(k.environment, k.name, k.version, k.fingerprint) for k in keys],
        [HostKey(k.host, k.role, k.environment, k.name, k.version, k.fingerprint) for k in host_keys],
    )


async def status(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    manifest: str | None,
) -> list[HostStatus]:
    """Per host: the newest ledger row that deployed there, the env fingerprint a deploy would give now, rotations.

    With no manifest, the one the environment's newest deploy was started with (the ledger keeps it).
    """
    _check_where(ctx, "deploy.status", project, environment)
    require(actor, Action.READ, project, environment)
    if manifest is None:
        async with rt.engine.begin() as conn:
            # NotFound for an environment that does not exist.
            await require_environment(conn, project, environment)
            latest = await repo.list_deploys(conn, project, environment, 1)
        if not latest:
            raise NotFound(f"{project}/{environment}: no deploy yet, so no manifest to compare hosts with")
        manifest = str(latest[0].manifest)
    parsed = _parse(project, manifest)
    _database_only(rt, project)
    plan = _plan(parsed, environment, None, via="ssh")
    env_only = Plan(parsed, plan.body, environment, plan.targets, plan.env_keys, frozenset())
    for env, name in env_only.keys:
        require(actor, Action.READ, project, env, key=name)
    async with rt.engine.begin() as conn:
        compiled, values = await _resolve(rt, conn, project, env_only)
        files = _env_files(rt, compiled, env_only)
        _served(rt, ctx, values, env_only.keys)
        pairs = [(t.host, t.role) for t in plan.targets]
        last = await repo.last_rows(conn, project, environment, pairs, deployed_only=True)
        attempts = await repo.last_rows(conn, project, environment, pairs, deployed_only=False)
        unreported = _unreported(
            project,
            environment,
            await repo.list_deploys(conn, project, environment, UNFINISHED_LOOKBACK, running_only=True),
            attempts,
            rt.clock(),
        )
        newest = await repo.newest_deployed_by_role(
            conn, project, environment, [t.role for t in plan.targets]
        )
        received: dict[tuple[str, str], list[DbRow]] = {}
        for (host, role), ledger in last.items():
            received[(host, role)] = await repo.host_keys_of(conn, ledger.deploy_id, host, role)
        # Keys a host received that today's manifest no longer gives it: their rotation still matters.
        gone = sorted(
            {(k.environment, k.name) for rows in received.values() for k in rows} - set(env_only.keys)
        )
        for env, name in gone:
            require(actor, Action.READ, project, env, key=name)
        if gone:
            more = await _decrypt(rt, await _stores(conn, project, environment, gone), gone)
            _served(rt, ctx, more, gone)
            values = {**values, **more}
        await audit.record(conn, rt, ctx)
    out = []
    for target, file in zip(plan.targets, files, strict=True):
        row = last.get((target.host, target.role))
        rotated: list[Rotated] = []
        if row is not None:
            for key in received[(target.host, target.role)]:
                now = values.get((key.environment, key.name))
                current = value_fingerprint(rt.keys.audit_key, now.value) if now is not None else None
                if current is None or not hmac.compare_digest(current, key.fingerprint):
                    rotated.append(Rotated(key.name, key.version, now.version if now is not None else None))
        reported = attempts.get((target.host, target.role))
        attempt = unreported.get((target.host, target.role)) or (
            _entry(reported) if reported is not None else None
        )
        out.append(
            HostStatus(
                target.host,
                target.role,
                _entry(row) if row is not None else None,
                file.env_fingerprint,
                rotated,
                attempt=attempt,
                behind=_behind(row, newest.get(target.role)),
            )
        )
    return out


# How many never-finished deploys `status` looks through for hosts they tried and never reported.
UNFINISHED_LOOKBACK = 20


def _unreported(
    project: str,
    environment: str,
    unfinished: Sequence[DbRow],
    attempts: dict[tuple[str, str], DbRow],
    now: datetime,
) -> dict[tuple[str, str], LedgerEntry]:
    """Per (host, role), a deploy still running, or abandoned, that targeted it after its newest report and
    never reported it: the host's newest attempt, shown as such (outcome `running` or `abandoned`).

    The CLI reports every host it tried (deployed, failed or skipped) before it finishes; one whose CLI was
    killed never does, and the host may run either version. Nothing is written: the ledger keeps only reports.
    """
    out: dict[tuple[str, str], LedgerEntry] = {}
    for row in unfinished:  # newest first: the newest such deploy is the host's attempt
        try:
            targets = _plan(_parse(project, str(row.manifest)), environment, row.hosts, via=row.via).targets
        except Invalid:
            continue  # a manifest today's parser refuses says nothing of its hosts
        state = _status(row, now)
        for target in targets:
            pair = (target.host, target.role)
            reported = attempts.get(pair)
            if pair in out or (
                reported is not None and (reported.deploy_id == row.id or reported.at >= row.started_at)
            ):
                continue
            error = (
                "the deploy has not reported this host yet"
                if state == "running"
                else "the deploy was abandoned without reporting this host: it may run either version"
            )
            record = HostRecord(target.host, target.role, state, None, None, None, error, row.started_at)
            out[pair] = LedgerEntry(record, row.id, row.version, row.principal_name)
    return out


def _entry(row: DbRow) -> LedgerEntry:
    return LedgerEntry(_host(row), row.deploy_id, row.version, row.principal_name)


def _behind(last: DbRow | None, newest: DbRow | None) -> LedgerEntry | None:
    """The role's newest deployed row, if it came after the host's last success and brought another version."""
    if newest is None or last is None or newest.id <= last.id or newest.version == last.version:
        return None
    return _entry(newest)
