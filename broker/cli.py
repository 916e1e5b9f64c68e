"""`strongroom-server`: serve, database migrations, keys and bootstrap."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.config import Settings, get_settings
from broker.errors import BrokerError

T = TypeVar("T")

BANNER = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! DEVELOPMENT KEY: {path}
!! Strongroom generated this key-encryption key and stored it next to the database.
!! Anyone who copies the data directory can decrypt every secret. Before production,
!! move to a real key source (STRONGROOM_KEYRING from your secret manager, or a
!! key file on another volume), PostgreSQL (STRONGROOM_DATABASE_URL) and TLS, and set
!! STRONGROOM_PRODUCTION=true so the broker refuses these defaults.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _settings(**overrides: Any) -> Settings:
    try:
        base = get_settings()
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    clean = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=clean) if clean else base


def _fail(exc: BrokerError) -> click.ClickException:
    return click.ClickException(exc.message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strongroom")
def main() -> None:
    """Run and administer the Strongroom broker."""


def _prepare_embedded(settings: Settings) -> None:
    """Data directory 0700 and a 0600 SQLite file before SQLite creates it with the umask."""
    from broker.files import ensure_private_dir

    ensure_private_dir(settings.data_dir)
    db = settings.data_dir / "strongroom.db"
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # WAL and shared-memory files are created later by SQLite; a private umask keeps them 0600 too.
    os.umask(0o077)


async def _bootstrap_file(settings: Settings, runtime: Any) -> Path | None:
    from broker.files import write_private
    from broker.services.auth import bootstrap_admin

    created = await bootstrap_admin(runtime)
    if created is None:
        return None
    path = settings.data_dir / "bootstrap-admin.secret"
    write_private(path, created.client_secret.encode() + b"\n")
    return path


def _login_hint(settings: Settings, path: Path) -> str:
    return (
        "Bootstrap admin created (client id: admin). Log in; the secret is read from a 0600 file,\n"
        "never typed on a command line:\n"
        f"  strongroom login --url http://{settings.host}:{settings.port} --client-id admin --secret-file {path}\n"
        f"Then move that secret to your password manager and delete the file: rm {path}"
    )


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8750).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes (PostgreSQL only).")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the API; on the embedded default, set up SQLite and a development key first."""
    import uvicorn

    from broker.db import migrate
    from broker.keys import load
    from broker.main import build_runtime, create_app
    from broker.services.runtime import utcnow

    settings = _settings(host=host, port=port)
    if settings.is_embedded:
        _prepare_embedded(settings)
        try:
            _, created = load(settings, now=utcnow(), create_dev=True)
        except BrokerError as exc:
            raise _fail(exc) from None
        if created or (settings.keyring is None and settings.key_file is None):
            click.echo(BANNER.format(path=settings.resolved_key_file), err=True)
        migrate.upgrade(settings.resolved_database_url)
        if workers != 1:
            raise click.UsageError("--workers: SQLite serves from one process; use PostgreSQL for several")
    try:
        runtime = build_runtime(settings)
    except BrokerError as exc:
        raise _fail(exc) from None
    if settings.is_embedded:
        path = _run(_bootstrap_file(settings, runtime))
        if path is not None:
            click.echo(_login_hint(settings, path), err=True)
    click.echo(f"strongroom broker on http://{settings.host}:{settings.port}", err=True)
    if workers > 1:
        uvicorn.run(
            "broker.main:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level="warning",
            server_header=False,
        )
    else:
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            server_header=False,
        )


@main.command()
def bootstrap() -> None:
    """Create the bootstrap admin if there is no principal yet; writes its secret to a 0600 file."""
    from broker.main import build_runtime

    settings = _settings()
    try:
        runtime = build_runtime(settings)
    except BrokerError as exc:
        raise _fail(exc) from None
    path = _run(_bootstrap_file(settings, runtime))
    if path is None:
        raise click.ClickException("bootstrap: the broker already has principals; nothing done")
    click.echo(_login_hint(settings, path))


@main.group()
def db() -> None:
    """Schema migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema (default: to the newest revision)."""
    from broker.db import migrate

    settings = _settings()
    if settings.is_embedded:
        _prepare_embedded(settings)
    migrate.upgrade(settings.resolved_database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION ('base' empties it)."""
    from broker.db import migrate

    migrate.downgrade(_settings().resolved_database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
def db_current() -> None:
    """Print the schema revision and the newest one this broker knows."""
    from broker.db import migrate
    from broker.db.engine import make_engine

    url = _settings().resolved_database_url

    async def current() -> str | None:
        engine = make_engine(url)
        try:
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"current: {_run(current()) or 'empty'}\nhead: {migrate.head_revision(url)}")


@main.group()
def keys() -> None:
    """Key-encryption keys: rotate, rewrap, retire."""


@keys.command("generate")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Keyring file to create."
)
def keys_generate(out: Path) -> None:
    """Write a new production keyring file (0600); the key never goes to stdout."""
    import json

    from broker.files import write_private
    from broker.keys import new_document
    from broker.services.runtime import utcnow

    if out.exists():
        raise click.ClickException(f"--out: {out} exists; refusing to overwrite a keyring")
    write_private(out, json.dumps(new_document(utcnow(), dev=False), indent=2).encode())
    click.echo(f"wrote {out} (0600); set STRONGROOM_KEY_FILE={out}")


@keys.command("rotate")
def keys_rotate() -> None:
    """Add a new key to the keyring file and make it current (restart brokers, then run `keys rewrap`)."""
    from broker.keys import rotate_file
    from broker.services.runtime import utcnow

    settings = _settings()
    if settings.keyring is not None:
        raise click.ClickException(
            "keys rotate: the keyring comes from STRONGROOM_KEYRING; add a key there and change `current`"
        )
    try:
        kid = rotate_file(settings.resolved_key_file, now=utcnow())
    except BrokerError as exc:
        raise _fail(exc) from None
    click.echo(f"new current key: {kid}; restart the brokers, then run `strongroom-server keys rewrap`")


@keys.command("rewrap")
@click.option("--batch", type=click.IntRange(1, 10_000), default=200, show_default=True)
def keys_rewrap(batch: int) -> None:
    """Re-wrap every data key under the current key, online; resumable and idempotent."""
    from broker.main import build_runtime
    from broker.services.keys import rewrap

    runtime = build_runtime(_settings())

    async def go() -> Any:
        try:
            return await rewrap(
                runtime, batch=batch, on_batch=lambda n: click.echo(f"  {n} re-wrapped", err=True)
            )
        finally:
            await runtime.engine.dispose()

    report = _run(go())
    click.echo(
        f"re-wrapped {report.rewrapped} data keys under {report.current}; {report.skipped} already moved"
    )


@keys.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Remove KEY_ID from the keyring file once no data key needs it."""
    from broker.keys import retire_from_file
    from broker.main import build_runtime
    from broker.services.keys import usage

    settings = _settings()
    runtime = build_runtime(settings)

    async def count() -> int:
        try:
            return await usage(runtime, key_id)
        finally:
            await runtime.engine.dispose()

    left = _run(count())
    if left:
        raise click.ClickException(f"key {key_id} still wraps {left} data keys; run `keys rewrap` first")
    try:
        retire_from_file(settings.resolved_key_file, key_id)
    except BrokerError as exc:
        raise _fail(exc) from None
    click.echo(f"retired {key_id}")


if __name__ == "__main__":
    sys.exit(main())
