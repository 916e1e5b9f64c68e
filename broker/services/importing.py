"""Import: copy secrets kept in Vault KV v2 or AWS Secrets Manager into the database backend.

Sources name a configured upstream: `vault://MOUNT/PATH` (every KV secret directly under PATH: a secret
holding only the backend's field gives one value named after its last path segment, any other gives
one value per data key) or `aws-sm://PREFIX` (per-key layout: every secret directly under PREFIX;
json layout: the keys of the JSON secret PREFIX; PREFIX may be a full ARN of the configured account).
A source outside every configured prefix, or an ARN of another account or region, is refused before
any upstream call. The upstream must list the target project in its `import_into`, and the caller
needs `admin` on the target environment, which must be a database environment.

A dry run reads the source and the environment and lists what would change (create, update,
unchanged, skip with a reason); a real run writes every create and update in one transaction, with
one audit event (`secret.import`), so an import is all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.backends import guard
from broker.backends.base import SecretBackend, UpstreamValue
from broker.backends.config import VaultUpstream
from broker.db.units import ConnTx
from broker.domain.names import check_name, check_slug, check_value
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action
from broker.errors import Forbidden, Invalid
from broker.repositories import secrets as repo
from broker.services import audit
from broker.services.auth import require
from broker.services.runtime import Runtime
from broker.services.stores.base import require_environment
from broker.services.stores.sealing import Place, open_version, served_as, store_version


@dataclass(frozen=True)
class Change:
    """What an import does (or would do) to one name."""

    name: str
    action: str  # create | update | unchanged | skip
    reason: str | None
    upstream_path: str | None
    upstream_version: str | None


@dataclass(frozen=True)
class ImportReport:
    """The outcome of an import or a dry run."""

    source: str
    backend: str
    dry_run: bool
    changes: list[Change]


def _locate(rt: Runtime, source: str, backend_name: str | None, project: str) -> tuple[SecretBackend, str]:
    """(backend, rel_dir) for a source URL; Forbidden/Invalid before any upstream call."""
    if rt.backends is None:
        raise Invalid("source: no upstreams are configured (STRONGROOM_BACKENDS_FILE)", field="source")
    kinds: tuple[str, ...]
    if source.startswith("vault://"):
        kinds, rest = ("vault-kv2",), source[len("vault://") :]
    elif source.startswith("aws-sm://"):
        kinds, rest = ("aws-sm", "aws-sm-json"), source[len("aws-sm://") :]
    else:
        raise Invalid("source: must start with vault:// or aws-sm://", field="source")
    candidates = [
        (b, rt.backends.configs[name])
        for name, b in rt.backends.backends.items()
        if b.kind in kinds and (backend_name is None or name == backend_name)
    ]
    if not candidates:
        raise Invalid(
            "source: no configured upstream of that kind (or with that backend name)", field="source"
        )
    refusal: Forbidden | None = None
    for b, cfg in candidates:
        try:
            if isinstance(cfg, VaultUpstream):
                mount, _, path = rest.partition("/")
                if mount != cfg.mount:
                    raise Forbidden(
                        f"source: mount {mount[:64]!r} is not the mount of backend {b.name}; refused"
                    )
                rel = guard.strip_prefix(cfg.prefix, path.strip("/"), where=f"backend {b.name}")
            else:
                from broker.backends.aws import AwsBackend

                assert isinstance(b, AwsBackend)
                rel = guard.strip_prefix(cfg.prefix, b.full_from_source(rest), where=f"backend {b.name}")
        except Forbidden as exc:
            refusal = exc
            continue
        if project not in cfg.import_into:
            raise Forbidden(f"source: backend {b.name} does not allow imports into project {project}")
        return b, rel
    assert refusal is not None
    raise refusal


async def import_into(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    source: str,
    backend: str | None,
    dry_run: bool,
    overwrite: bool,
) -> ImportReport:
    """Copy a source's values into a database environment (or list what would change)."""
    ctx.about("secret.import", project=project[:64], environment=environment[:64])
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    require(actor, Action.ADMIN, project, environment)
    if rt.backends is not None and rt.backends.env_route(project, environment) is not None:
        raise Invalid(
            f"projects/{project}/environments/{environment}: is kept upstream; import copies into a database environment",
            field="environment",
        )
    b, rel = _locate(rt, source, backend, project)
    assert rt.backends is not None
    ctx.backend = b.name
    ctx.upstream_path = rel
    values: dict[str, UpstreamValue] = await rt.backends.call(b, b.list_source, rel)
    changes: list[Change] = []
    writes: list[tuple[str, bytes]] = []
    now = rt.clock()
    async with rt.engine.begin() as conn:
        project_id, env_id = await require_environment(conn, project, environment)
        for name in sorted(values):
            got = values[name]
            path, ver = got.origin.path, got.origin.upstream_version
            try:
                check_name(name, field="name")
                data = check_value(got.value.reveal(), field="value")
            except Invalid as exc:
                changes.append(Change(name[:256], "skip", exc.message, path, ver))
                continue
            row = await repo.read_current(conn, env_id, name)
            if row is None:
                changes.append(Change(name, "create", None, path, ver))
                writes.append((name, data))
                continue
            _sid, _sens, cur, ct, wrapped, kek, _created, deleted, destroyed = row
            same = False
            if (
                ct is not None
                and wrapped is not None
                and kek is not None
                and deleted is None
                and destroyed is None
            ):
                same = (
                    await open_version(
                        rt,
                        project_id=project_id,
                        env_id=env_id,
                        name=name,
                        version=cur,
                        ct=ct,
                        wrapped=wrapped,
                        kek=kek,
                    )
                ).encode() == data
            if same:
                changes.append(Change(name, "unchanged", None, path, ver))
            elif not overwrite:
                changes.append(Change(name, "skip", "exists with another value (use overwrite)", path, ver))
            else:
                changes.append(Change(name, "update", None, path, ver))
                writes.append((name, data))
        if not dry_run:
            for name, data in writes:
                sec = await repo.find_secret(ConnTx(conn), env_id, name)
                if sec is None:
                    secret_id = await repo.add_secret(
                        ConnTx(conn), env_id=env_id, name=name, sensitive=True, now=now
                    )
                    at = Place(project_id, project, env_id, environment, secret_id, name)
                    version = 1
                else:
                    at = Place(project_id, project, env_id, environment, sec.id, name)
                    served_as(rt, sec.binding, at, current_version=sec.current_version)
                    if not await repo.bump_version(
                        ConnTx(conn), sec.id, expected=sec.current_version, sensitive=sec.sensitive, now=now
                    ):
                        raise Invalid(f"{name}: changed concurrently; run the import again", field="name")
                    version = sec.current_version + 1
                await store_version(
                    ConnTx(conn), rt, at, version=version, data=data, author_id=actor.principal_id, now=now
                )
                audit.saw_value(
                    rt, ctx, environment=environment, name=name, version=version, value=data.decode()
                )
        ctx.reason = f"{'dry run: ' if dry_run else ''}{len(writes)} of {len(changes)} names written from {source[:200]}"
        await audit.record(conn, rt, ctx)
    return ImportReport(source, b.name, dry_run, changes)
