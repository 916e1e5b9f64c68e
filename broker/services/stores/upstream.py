"""The upstream store: secrets kept in Vault KV v2 or AWS Secrets Manager, served through the broker.

broker.services.stores.choose picks this store when the backends file maps the secret (or, for a list or
a resolve, the project). Scopes and names are checked before a store is called. Upstream calls run in
the backend's worker threads and never inside a database transaction (no lock is held across the
network).

Audit: every event names the backend, the upstream path and the upstream version (ctx). A read's event
commits before the value is returned, as in the database store. A write cannot share a transaction with
the upstream, so the upstream write comes first and its event right after; if that event cannot be
written the client gets 503 although the upstream holds the new version (which the upstream's own audit
device records). Upstream errors are BrokerErrors (not found, forbidden, conflict, throttled,
unavailable): nothing stale or partial is returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from broker.backends.base import Origin, UpstreamMeta, UpstreamValue
from broker.backends.router import Backends, Route
from broker.db.units import MustWait, Tx
from broker.domain.inheritance import Seen, StoredRow, chain
from broker.domain.inheritance import visible as visible_rows
from broker.domain.request import Actor, RequestContext
from broker.domain.values import SecretValue
from broker.errors import Invalid, NotFound
from broker.repositories import secrets as repo
from broker.services import audit, visible
from broker.services.runtime import Runtime
from broker.services.stores.base import (
    Generated,
    ResolvedValue,
    SecretMeta,
    SecretRead,
    VersionInfo,
    require_environment,
    where,
)

T = TypeVar("T")


def _about(ctx: RequestContext, route: Route) -> None:
    ctx.backend = route.backend.name
    ctx.upstream_path = route.rel


def _came_from(ctx: RequestContext, origin: Origin, version: int | None) -> None:
    ctx.backend = origin.backend
    ctx.upstream_path = origin.path
    ctx.upstream_version = origin.upstream_version
    ctx.version = version


async def _env_exists(rt: Runtime, project: str, environment: str) -> None:
    async def unit(tx: Tx) -> None:
        await require_environment(tx, project, environment)

    await rt.units.run(unit, atomic=False)


async def _audit(
    rt: Runtime, ctx: RequestContext, project: str, environment: str, *, status: int = 200
) -> None:
    async def unit(tx: Tx) -> None:
        if audit.must_wait(rt, tx):
            raise MustWait()
        await require_environment(tx, project, environment)
        await audit.record_in(tx, rt, ctx, status=status)

    await rt.units.run(unit)


def _meta(rt: Runtime, name: str, meta: UpstreamMeta) -> SecretMeta:
    now = rt.clock()
    return SecretMeta(
        name, meta.version, True, False, meta.created_at or now, meta.updated_at or now, meta.origin
    )


class UpstreamStore:
    """Secrets an upstream holds. `route` is the secret's upstream in a request about one secret; a list
    or a resolve (route None) finds each environment's and secret's mapping itself."""

    def __init__(self, backends: Backends, route: Route | None) -> None:
        self.backends = backends
        self.route = route

    def _target(self, ctx: RequestContext) -> Route:
        # choose() gives every request about one secret its route; only a list or a resolve has none.
        assert self.route is not None, "a request about one secret has its route"
        _about(ctx, self.route)
        return self.route

    async def _change(self, route: Route, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A change upstream; the cached entries of the secret and its directory go whatever happens."""
        b = route.backend
        try:
            return await self.backends.call(b, fn, route.rel, *args, **kwargs)
        finally:
            self.backends.cache.drop(b.name, route.rel)

    async def read(
        self,
        rt: Runtime,
        ctx: RequestContext,
        *,
        project: str,
        environment: str,
        name: str,
        version: int | None,
        pin: str | None,
    ) -> SecretRead:
        """Read upstream, then commit the audit event, then return the value."""
        if version is not None and version < 1:
            raise Invalid("version: must be a positive integer", field="version")
        if version is not None and pin is not None:
            raise Invalid(
                "upstream_version: give either version or upstream_version", field="upstream_version"
            )
        if pin is not None and not 0 < len(pin) <= 256:
            raise Invalid("upstream_version: 1 to 256 characters", field="upstream_version")
        route = self._target(ctx)
        got = await self.backends.read(route, version=version, pin=pin)
        _came_from(ctx, got.origin, got.version)
        audit.saw_value(
            rt, ctx, environment=environment, name=name, version=got.version, value=got.value.reveal()
        )
        await _audit(rt, ctx, project, environment)
        return SecretRead(
            name, got.value, got.version, True, environment, got.created_at or rt.clock(), got.origin
        )

    async def write(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        sensitive: bool,
        cas: int | None,
    ) -> SecretMeta:
        """Write upstream (its own check-and-set), then record the event. Proxied values are always
        sensitive, whatever `sensitive` says."""
        await _env_exists(rt, project, environment)
        route = self._target(ctx)
        meta = await self._change(route, route.backend.write, value, cas=cas)
        _came_from(ctx, meta.origin, meta.version)
        audit.saw_value(rt, ctx, environment=environment, name=name, version=meta.version, value=value)
        await _audit(rt, ctx, project, environment)
        return _meta(rt, name, meta)

    async def generate(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        rotate: bool,
    ) -> Generated:
        """Refused: an upstream's values are generated there."""
        raise Invalid(
            f"{where(project, environment, name)}: kept in an external backend; generate it there "
            "and read it through the broker",
            field="name",
        )

    async def delete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> None:
        """Soft delete upstream."""
        await _env_exists(rt, project, environment)
        route = self._target(ctx)
        ctx.version = await self._change(route, route.backend.delete)
        await _audit(rt, ctx, project, environment, status=204)

    async def undelete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> SecretMeta:
        """Undelete upstream."""
        await _env_exists(rt, project, environment)
        route = self._target(ctx)
        meta = await self._change(route, route.backend.undelete)
        _came_from(ctx, meta.origin, meta.version)
        await _audit(rt, ctx, project, environment)
        return _meta(rt, name, meta)

    async def destroy(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str, version: int
    ) -> None:
        """Destroy one version upstream (where the upstream can)."""
        await _env_exists(rt, project, environment)
        route = self._target(ctx)
        await self._change(route, route.backend.destroy, version)
        await _audit(rt, ctx, project, environment, status=204)

    async def history(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> tuple[int, list[VersionInfo]]:
        """Upstream versions, newest first (authors are not known upstream)."""
        route = self._target(ctx)
        b = route.backend
        current, versions = await self.backends.call(b, b.history, route.rel)
        ctx.version = current
        await _audit(rt, ctx, project, environment)
        epoch = rt.clock()
        return current, [
            VersionInfo(v.version, v.created_at or epoch, None, v.deleted, v.destroyed, v.upstream_version)
            for v in versions
        ]

    async def rollback(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        version: int,
    ) -> SecretMeta:
        """A new upstream version holding an older version's value, conditional on the current version."""
        await _env_exists(rt, project, environment)
        route = self._target(ctx)
        b = route.backend
        current, _ = await self.backends.call(b, b.history, route.rel)
        old = await self.backends.call(b, b.read, route.rel, version=version)
        meta = await self._change(route, b.write, old.value.reveal(), cas=current)
        _came_from(ctx, meta.origin, meta.version)
        audit.saw_value(
            rt, ctx, environment=environment, name=name, version=meta.version, value=old.value.reveal()
        )
        await _audit(rt, ctx, project, environment)
        return _meta(rt, name, meta)

    async def list(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, include_deleted: bool
    ) -> list[SecretMeta]:
        """A mapped environment's upstream secrets, or a database environment's rows plus its mapped secrets."""
        backends = self.backends
        env_route = backends.env_route(project, environment)
        singles = backends.single_secrets(project, environment)
        metas: dict[str, SecretMeta] = {}
        if env_route is not None:
            _about(ctx, env_route)
            b = env_route.backend
            for m in await backends.call(b, b.list_dir, env_route.rel):
                metas[m.name] = SecretMeta(
                    m.name,
                    m.version,
                    True,
                    m.deleted,
                    m.created_at or rt.clock(),
                    m.updated_at or rt.clock(),
                    m.origin,
                )
        for name, route in singles:
            b = route.backend
            try:
                current, versions = await backends.call(b, b.history, route.rel)
            except NotFound:
                continue
            top = next((v for v in versions if v.version == current), None)
            deleted = top is None or top.deleted or top.destroyed
            created = min((v.created_at for v in versions if v.created_at), default=None) or rt.clock()
            updated = (top.created_at if top else None) or created
            path = f"{b.name}:{route.rel}"
            metas[name] = SecretMeta(
                name,
                current,
                True,
                deleted,
                created,
                updated,
                Origin(b.name, b.kind, path, top.upstream_version if top else None),
            )

        async def unit(tx: Tx) -> list[repo.Listed]:
            if audit.must_wait(rt, tx):
                raise MustWait()
            _, env_id = await require_environment(tx, project, environment)
            rows = [] if env_route is not None else await repo.list_secrets(tx, env_id)
            await audit.record_in(tx, rt, ctx)
            return rows

        rows = await rt.units.run(unit)
        for r in rows:
            if r.name in metas:
                continue
            deleted = r.deleted_at is not None or r.destroyed_at is not None
            metas[r.name] = SecretMeta(
                r.name, r.current_version, r.sensitive, deleted, r.created_at, r.updated_at
            )
        return [m for _, m in sorted(metas.items()) if include_deleted or not m.deleted]

    async def resolve(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str
    ) -> dict[str, ResolvedValue]:
        """Inheritance across database and upstream environments; the nearest environment wins, and within
        one environment a value mapped upstream wins over a database row of the same name."""
        backends = self.backends
        async with rt.engine.begin() as conn:
            first = await visible.load_chain(conn, project, environment)
        slugs = [first.tree[e][0] for e in chain(first.environment_id, first.tree)]
        upstream = await _upstream_values(backends, project, slugs)
        async with rt.engine.begin() as conn:
            # Read again after the upstream calls: no transaction is held across the network.
            got = await visible.load_chain(conn, project, environment)
            by_slug = {slug: eid for eid, (slug, _parent) in got.tree.items()}
            whole = {eid for slug, eid in by_slug.items() if backends.env_route(project, slug) is not None}
            candidates: list[_Upstream | StoredRow] = [
                _Upstream(by_slug[slug], name, value)
                for slug, values in upstream.items()
                if slug in by_slug
                for name, value in values.items()
            ]
            candidates += [row for row in got.rows if row.environment_id not in whole]
            picked = visible_rows(got.environment_id, got.tree, candidates)
            stored = [Seen(s.row, s.environment) for s in picked.values() if isinstance(s.row, StoredRow)]
            texts = await visible.reveal(rt, project_id=got.project_id, project=project, seen=stored)
            opened = {s.row.name: text for s, text in zip(stored, texts, strict=True)}
            out: dict[str, ResolvedValue] = {}
            for name, seen in picked.items():
                row = seen.row
                if isinstance(row, StoredRow):
                    out[name] = ResolvedValue(
                        SecretValue(opened[name]), row.version, seen.environment, row.sensitive
                    )
                else:
                    out[name] = ResolvedValue(
                        row.got.value, row.got.version, seen.environment, True, row.got.origin
                    )
            visible.note(
                rt,
                ctx,
                [(v.environment, name, v.version) for name, v in out.items()],
                [v.value.reveal() for v in out.values()],
            )
            await audit.record(conn, rt, ctx)
        return out


async def _upstream_values(
    backends: Backends, project: str, chain_slugs: list[str]
) -> dict[str, dict[str, UpstreamValue]]:
    """Values of every mapped environment (whole) and single mapped secret in the chain, concurrently."""
    jobs: list[tuple[str, str | None, asyncio.Future[object] | asyncio.Task[object]]] = []

    async def one(route: Route) -> object:
        try:
            return await backends.read(route)
        except NotFound:
            return None

    for slug in chain_slugs:
        env_route = backends.env_route(project, slug)
        if env_route is not None:
            jobs.append((slug, None, asyncio.ensure_future(backends.read_many(env_route))))
        for name, route in backends.single_secrets(project, slug):
            jobs.append((slug, name, asyncio.ensure_future(one(route))))
    out: dict[str, dict[str, UpstreamValue]] = {}
    try:
        results = await asyncio.gather(*(job for _, _, job in jobs))
    except BaseException:
        for _, _, job in jobs:
            job.cancel()
        raise
    for (slug, single, _), result in zip(jobs, results, strict=True):
        bucket = out.setdefault(slug, {})
        if single is None:
            assert isinstance(result, dict)
            for key, value in result.items():
                bucket.setdefault(key, value)
        elif isinstance(result, UpstreamValue):
            bucket[single] = result
    return out


class _Upstream(NamedTuple):
    """A value an upstream backend holds for an environment of the chain (always served, always sensitive)."""

    environment_id: int
    name: str
    got: UpstreamValue
    readable: bool = True
