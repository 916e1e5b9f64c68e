"""`strongroom-server`: serve, database migrations, keys and bootstrap."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
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
    from pydantic import ValidationError

    from broker.config import describe

    try:
        base = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"configuration: {describe(exc)}") from None
    except ValueError as exc:  # pydantic-settings' parse errors name the setting, not the value
        raise click.ClickException(f"configuration: {exc}") from None
    clean = {k: v for k, v in overrides.items() if v is not None}
    if base.is_embedded:
        _check_embedded_modes(base)
    return base.model_copy(update=clean) if clean else base


def _check_embedded_modes(settings: Settings) -> None:
    """Refuse a data directory or SQLite file open to other users, as the key files are refused: the
    database holds every secret (wrapped) and the audit trail. The broker creates them private itself."""
    from broker.files import loose_mode

    db = settings.data_dir / "strongroom.db"
    candidates = [
        (settings.data_dir, "data directory"),
        *((db.with_name(db.name + suffix), "database file") for suffix in ("", "-wal", "-shm", "-journal")),
    ]
    if settings.keyring is None and settings.key_file is None:
        candidates.append((settings.resolved_key_file, "key file"))
    for path, what in candidates:
        if path.exists() and (loose := loose_mode(path, what)) is not None:
            raise click.ClickException(f"STRONGROOM_DATA_DIR: {loose}")


def _fail(exc: BrokerError) -> click.ClickException:
    return click.ClickException(exc.message)


_DATABASE_MODULES = frozenset({"asyncpg", "sqlalchemy", "aiosqlite", "sqlite3", "alembic"})


def _database_setting() -> str:
    try:
        return "STRONGROOM_DATA_DIR" if get_settings().is_embedded else "STRONGROOM_DATABASE_URL"
    except ValueError:
        return "STRONGROOM_DATABASE_URL"


def _why_database(exc: BaseException) -> str | None:
    """What went wrong reaching the database, from the exception chain's types (never its text, which can
    quote the URL), or None when the chain holds no database or network error."""
    import socket
    import sqlite3

    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 20:
        seen.append(cur)
        cur = getattr(cur, "orig", None) or cur.__cause__ or cur.__context__
    names = {type(e).__name__ for e in seen}
    if any(isinstance(e, ConnectionRefusedError) for e in seen):
        return "connection refused"
    if any(isinstance(e, socket.gaierror) for e in seen):
        return "the host name does not resolve"
    if any(isinstance(e, TimeoutError) for e in seen):
        return "timed out"
    if names & {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return "the server refused the user name or password"
    if "InvalidCatalogNameError" in names:
        return "the database does not exist"
    if any(isinstance(e, sqlite3.OperationalError) for e in seen):
        return "the SQLite file cannot be opened or written"
    if any(isinstance(e, ConnectionError | OSError) and not getattr(e, "filename", None) for e in seen):
        return "the connection failed"
    driver = next((e for e in seen if type(e).__module__.split(".")[0] in _DATABASE_MODULES), None)
    return type(driver).__name__ if driver is not None else None


def failure_sentence(exc: BaseException) -> str:
    """Any failure of a command as one sentence naming the setting or path, without values or a traceback."""
    if isinstance(exc, BrokerError):
        return exc.message
    if type(exc).__name__ == "CommandError" and type(exc).__module__.startswith("alembic"):
        return f"REVISION: {exc}"  # alembic's own sentence about the revision argument; no settings in it
    why = _why_database(exc)
    if why is not None:
        return f"{_database_setting()}: cannot use the database ({why}); check the setting and that it is up"
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    return (
        f"failed with an unexpected {type(exc).__name__} (details not printed: they can hold setting values)"
    )


_THREAD_HOOK = threading.excepthook


def quiet_closed_loop(args: threading.ExceptHookArgs) -> None:
    """Drop the one thread error a failed command leaves behind; hand every other to Python's hook."""
    # aiosqlite's worker thread may finish a connection's close after a failed command's event loop is closed,
    # and then raises "Event loop is closed" on its own: a second, misleading error after the one sentence.
    if (
        isinstance(args.exc_value, RuntimeError)
        and str(args.exc_value) == "Event loop is closed"
        and args.thread is not None
        and "_connection_worker_thread" in args.thread.name
    ):
        return
    _THREAD_HOOK(args)


class _Commands(click.Group):
    """The command group; every failure ends as one sentence (click's "Error: ..."), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        threading.excepthook = quiet_closed_loop
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            raise click.ClickException(failure_sentence(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strongroom")
def main() -> None:
    """Run and administer the Strongroom broker."""


def _prepare_embedded(settings: Settings) -> None:
    """Data directory 0700 and a 0600 SQLite file before SQLite creates it with the umask (an existing one
    open to others was refused by `_settings`)."""
    from broker.files import ensure_private_dir

    ensure_private_dir(settings.data_dir)
    db = settings.data_dir / "strongroom.db"
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # SQLite creates -wal, -shm and -journal later (with the database's mode; the umask covers the rest).
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


async def _check_audit(settings: Settings) -> None:
    from broker.main import build_runtime
    from broker.services.audit import runner

    # A runtime of its own, closed here: its connections belong to this event loop, not uvicorn's.
    try:
        rt = build_runtime(settings)
    except BrokerError as exc:
        raise _fail(exc) from None
    try:
        await runner.check_before_serving(rt)
    except BrokerError as exc:
        raise _fail(exc) from None
    finally:
        for sink in rt.audit.sinks:
            sink.close()
        await rt.units.close()
        await rt.engine.dispose()


async def _check_schema(url: str) -> None:
    from broker.db import migrate
    from broker.db.engine import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        current = await migrate.current_revision(engine)
    finally:
        await engine.dispose()
    head = migrate.head_revision(url)
    if current != head:
        raise click.ClickException(
            f"{_database_setting()}: the database schema is at {current or 'nothing'} but this broker "
            f"needs {head}; run `strongroom-server db upgrade` first"
        )


def _login_hint(settings: Settings, path: Path) -> str:
    return (
        "Bootstrap admin created (client id: admin). Log in; the secret is read from a 0600 file,\n"
        "never typed on a command line:\n"
        f"  strongroom login --url {'https' if settings.tls_cert_file else 'http'}://{settings.host}:{settings.port}"
        f" --client-id admin --secret-file {path}\n"
        f"Then move that secret to your password manager and delete the file: rm {path}"
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to any interface


def _check_transport(settings: Settings) -> None:
    """TLS needs both files; plain HTTP is served off loopback only when the operator says so explicitly."""
    from broker.files import loose_mode

    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        missing = (
            "--tls-key (STRONGROOM_TLS_KEY_FILE)" if key is None else "--tls-cert (STRONGROOM_TLS_CERT_FILE)"
        )
        raise click.UsageError(f"{missing}: TLS needs both a certificate and its key")
    for path, option in ((cert, "--tls-cert"), (key, "--tls-key")):
        if path is not None and not path.is_file():
            raise click.UsageError(f"{option}: {path}: no such file")
    if key is not None and (loose := loose_mode(key, "TLS key")) is not None:
        raise click.UsageError(f"--tls-key: {loose}")
    if cert is None and not settings.allow_plain_http and not _is_loopback(settings.host):
        raise click.UsageError(
            f"--host: {settings.host} is not loopback, and plain HTTP there would carry tokens and values in "
            "clear; give --tls-cert and --tls-key, or --allow-plain-http (STRONGROOM_ALLOW_PLAIN_HTTP=true) "
            "only behind a TLS-terminating proxy"
        )


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8750).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes (PostgreSQL only).")
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="Serve HTTPS with this PEM certificate chain [env: STRONGROOM_TLS_CERT_FILE].",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path),
    default=None,
    help="The certificate's PEM private key [env: STRONGROOM_TLS_KEY_FILE].",
)
@click.option(
    "--allow-plain-http",
    is_flag=True,
    default=None,
    help="Serve plain HTTP on an address other than loopback (behind a TLS-terminating proxy only) "
    "[env: STRONGROOM_ALLOW_PLAIN_HTTP].",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    envvar="STRONGROOM_GRACEFUL_TIMEOUT",
    help="On SIGTERM or SIGINT, stop accepting and let requests in flight finish for at most this many "
    "seconds; those still running then are cancelled (answered 500 or cut off, never completed) and "
    "their transactions rolled back "
    "[env: STRONGROOM_GRACEFUL_TIMEOUT].",
)
def serve(
    host: str | None,
    port: int | None,
    workers: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    allow_plain_http: bool | None,
    graceful_timeout: int,
) -> None:
    """Serve the API; on the embedded default, set up SQLite and a development key first."""
    import logging.config
    import shutil
    import signal
    import tempfile

    from broker import logs

    settings = _settings(
        host=host,
        port=port,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        allow_plain_http=allow_plain_http or None,
    )
    _check_transport(settings)
    log_config = logs.config(settings.log_format)
    logging.config.dictConfig(log_config)
    metrics_dir: Path | None = None
    if settings.metrics_port is not None:
        # Every worker writes its metric values to files in this run's own directory (prometheus_client's
        # multiprocess mode reads the variable when it is first imported, so it is set before that).
        metrics_dir = Path(
            tempfile.mkdtemp(prefix="strongroom-metrics-", dir=settings.prometheus_multiproc_dir)
        )
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        settings = settings.model_copy(update={"prometheus_multiproc_dir": metrics_dir})
        # uvicorn re-raises the SIGTERM it handled once it has shut down; exit normally instead, so the
        # run's directory is removed below (as it is when the supervisor of several workers returns).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _serve(settings, workers, log_config, graceful_timeout)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings: Settings, workers: int, log_config: dict[str, Any], graceful_timeout: int) -> None:
    import uvicorn

    from broker.keys import load
    from broker.main import build_runtime, create_app
    from broker.services import metrics
    from broker.services.runtime import utcnow

    scheme = "https" if settings.tls_cert_file is not None else "http"
    if settings.is_embedded:
        _prepare_embedded(settings)
        try:
            _, created = load(settings, now=utcnow(), create_dev=True)
        except BrokerError as exc:
            raise _fail(exc) from None
        if created or (settings.keyring is None and settings.key_file is None):
            click.echo(BANNER.format(path=settings.resolved_key_file), err=True)
        _upgrade(settings, "head")
        if workers != 1:
            raise click.UsageError("--workers: SQLite serves from one process; use PostgreSQL for several")
    # Before uvicorn: its lifespan failure would print a traceback and say nothing about the setting.
    _run(_check_schema(settings.resolved_database_url))
    # Before uvicorn, like the schema: its failed start-up prints the address, then two ERROR lines.
    _run(_check_audit(settings))
    try:
        runtime = build_runtime(settings)
    except BrokerError as exc:
        raise _fail(exc) from None
    if settings.is_embedded:
        path = _run(_bootstrap_file(settings, runtime))
        if path is not None:
            click.echo(_login_hint(settings, path), err=True)
    if settings.audit_signing_key_file is None:
        from broker.audit.signing import checkpoint_dir, signing_key_path

        click.echo(
            f"!! DEVELOPMENT AUDIT SIGNING KEY: {signing_key_path(settings)} signs the audit checkpoints in "
            f"{checkpoint_dir(settings)}.\n!! Both sit next to the database, so they prove nothing against "
            "someone who can copy or restore the data directory. Before production, set\n"
            "!! STRONGROOM_AUDIT_SIGNING_KEY_FILE (strongroom-server audit keygen) and "
            "STRONGROOM_AUDIT_CHECKPOINT_DIR on another volume or host.",
            err=True,
        )
    click.echo(f"strongroom broker on {scheme}://{settings.host}:{settings.port}", err=True)
    from broker.api.protocol import BoundedHttpTools

    # Without a bound uvicorn waits for a stuck client forever, and the supervisor's SIGKILL then cuts off
    # every request in flight, not only the stuck one.
    options: dict[str, Any] = {"timeout_graceful_shutdown": graceful_timeout}
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        options |= {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    if settings.metrics_port is not None:
        try:
            metrics.serve(settings)
        except OSError as exc:
            raise click.UsageError(
                f"STRONGROOM_METRICS_PORT: cannot listen on {settings.metrics_host}:{settings.metrics_port} "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        click.echo(f"metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics", err=True)
    if workers > 1:
        uvicorn.run(
            "broker.main:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level="warning",
            log_config=log_config,
            server_header=False,
            http=BoundedHttpTools,
            **options,
        )
    else:
        uvicorn.run(
            create_app(runtime, freeze_heap=True),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            log_config=log_config,
            server_header=False,
            http=BoundedHttpTools,
            **options,
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


def _upgrade(settings: Settings, revision: str) -> None:
    """Upgrade the schema; an upgrade that adds secret bindings binds the secrets already stored (to
    what the database names at this moment: see `keys bind`)."""
    from broker.db import migrate
    from broker.db.engine import make_engine

    url = settings.resolved_database_url

    async def unbound_schema() -> bool:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return bool(await conn.run_sync(_lacks_bindings))
        finally:
            await engine.dispose()

    before = _run(unbound_schema())
    migrate.upgrade(url, revision)
    if before and not _run(unbound_schema()):
        try:
            count = _bind_all(settings)
        except BrokerError as exc:
            click.echo(f"secrets not bound yet ({exc.message}); run `strongroom-server keys bind`", err=True)
            return
        click.echo(f"bound {count} existing secrets to their paths and versions", err=True)


def _lacks_bindings(conn: Any) -> bool:
    from sqlalchemy import inspect

    insp = inspect(conn)
    return insp.has_table("secrets") and "binding" not in {c["name"] for c in insp.get_columns("secrets")}


def _bind_all(settings: Settings) -> int:
    from broker.main import build_runtime
    from broker.services.keys import bind_unbound

    runtime = build_runtime(settings)

    async def go() -> int:
        try:
            return await bind_unbound(runtime)
        finally:
            await runtime.engine.dispose()

    return _run(go())


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema (default: to the newest revision)."""

    settings = _settings()
    if settings.is_embedded:
        _prepare_embedded(settings)
    _upgrade(settings, revision)
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


def _database_url(url: str, option: str) -> str:
    """A database URL given on the command line, checked and with the async driver filled in."""
    from broker.config import DATABASE_SCHEMES

    if not url.startswith(DATABASE_SCHEMES):
        raise click.BadParameter("must be a postgresql:// or sqlite:// URL", param_hint=option)
    return Settings.model_construct(database_url=url).resolved_database_url


def _reach(url: str, option: str, nothing: str = "nothing was copied") -> None:
    """Open the database once, so that an unreachable one is named by its option, not by a setting."""
    from broker.db import migrate
    from broker.db.engine import make_engine

    async def go() -> None:
        engine = make_engine(url, pool_size=1)
        try:
            await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    try:
        _run(go())
    except Exception as exc:
        why = _why_database(exc) or type(exc).__name__
        raise click.ClickException(f"{option}: cannot use the database ({why}); {nothing}") from None


@db.command("copy")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL",
    help="The database to copy, e.g. sqlite:////var/lib/strongroom/strongroom.db (left unchanged).",
)
@click.option(
    "--to",
    "target",
    default=None,
    metavar="URL",
    help="An empty, migrated PostgreSQL database (default: STRONGROOM_DATABASE_URL, which keeps its password "
    "off the command line).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many stored values to decrypt on the target as a check (none is printed).",
)
def db_copy(source: str, target: str | None, sample: int) -> None:
    """Copy every row (ciphertexts as they are) onto an empty PostgreSQL database, then verify it there."""
    from broker.main import build_runtime
    from broker.services import dbcopy

    settings = _settings()
    source_url = _database_url(source, "--from")
    sqlite_path = source_url.partition(":///")[2] if source_url.startswith("sqlite") else None
    if sqlite_path is not None and not Path(sqlite_path).is_file():
        # SQLite would create an empty file there; say what is wrong instead.
        raise click.BadParameter(f"{sqlite_path}: no such SQLite file", param_hint="--from")
    if target is None:
        if settings.is_embedded:
            raise click.UsageError("--to: give the target URL or set STRONGROOM_DATABASE_URL to it")
        target_url = settings.resolved_database_url
    else:
        target_url = _database_url(target, "--to")
    # The same keys as the source's broker: they open the copied values and verify the copied chain.
    on_target = settings.model_copy(update={"database_url": target_url})
    try:
        runtime = build_runtime(on_target)
    except BrokerError as exc:
        raise _fail(exc) from None
    for url, option in ((source_url, "--from"), (target_url, "--to")):
        _reach(url, option)
    sampled, failed = _run(dbcopy.source_undecryptable(runtime, source_url=source_url, sample=sample))
    if failed:
        raise click.ClickException(
            f"--from: {len(failed)} of {sampled} sampled values do not decrypt with the configured keyring "
            f"(STRONGROOM_KEYRING or STRONGROOM_KEY_FILE must be the source broker's): {', '.join(failed)}; "
            "nothing was copied"
        )
    copied = _run(dbcopy.copy_rows(source_url=source_url, target_url=target_url))
    for name, n in copied.tables:
        click.echo(f"{name}: {n}")
    click.echo(
        f"copied {copied.rows} rows in {len(copied.tables)} tables at schema revision {copied.revision}"
    )

    async def verify() -> Any:
        try:
            return await dbcopy.verify_target(runtime, copied=copied, sample=sample)
        finally:
            await runtime.engine.dispose()

    checked = _run(verify())
    problems = []
    if not checked.counts_match:
        problems.append("row counts differ from what was copied (was a broker writing to the target?)")
    if checked.undecryptable:
        problems.append(
            f"{len(checked.undecryptable)} of {checked.sampled} sampled values do not decrypt with the configured "
            f"keyring (is it the source's?): {', '.join(checked.undecryptable)}"
        )
    if not checked.audit.ok:
        problems.append(f"the audit chain does not verify: {_report_text(checked.audit)}")
    if problems:
        raise click.ClickException("--to: the target holds the copy but " + "; ".join(problems))
    click.echo(
        f"verified on the target: row counts, the audit chain ({checked.audit.events} records), "
        f"{checked.sampled} sampled values decrypt"
    )


@main.command("backup")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The backup file to write (0600, atomically; an existing file is replaced only once the new one is whole).",
)
def backup_command(out: Path) -> None:
    """Back up the database online (one consistent snapshot) and the checkpoint directory's state; never the keys."""
    from broker.audit.signing import checkpoint_dir
    from broker.audit.sinks import CheckpointDirectory
    from broker.services import backup
    from broker.services.runtime import utcnow

    settings = _settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite") and not Path(url.partition(":///")[2]).is_file():
        # Opening it would create an empty database; say what is wrong instead.
        raise click.ClickException(
            f"{_database_setting()}: there is no database at {url.partition(':///')[2]}"
        )
    if out.is_dir():
        raise click.BadParameter(f"{out} is a directory; give a file name", param_hint="--out")
    if not out.parent.is_dir():
        raise click.BadParameter(f"{out.parent}: no such directory", param_hint="--out")
    manifest = _run(
        backup.backup(
            source_url=url,
            out=out,
            checkpoints=CheckpointDirectory(checkpoint_dir(settings)),
            now=utcnow(),
        )
    )
    body = manifest.body
    click.echo(
        f"wrote {out} (0600): schema {manifest.schema_head}, {sum(manifest.rows.values())} rows, audit head seq "
        f"{manifest.audit_seq}, {body['checkpoints']['count']} checkpoints; manifest {manifest.sha256}\n"
        "the keyring is not in it: keep the keyring and the audit signing key apart from it"
    )


@main.command("restore")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="A file written by `strongroom-server backup`.",
)
@click.option(
    "--to",
    "target",
    default=None,
    metavar="URL",
    help="The database to restore into (default: the configured one, which keeps its password off the command line).",
)
@click.option("--replace", is_flag=True, help="Wipe a target that holds rows before restoring into it.")
def restore_command(source: Path, target: str | None, replace: bool) -> None:
    """Restore a backup into an empty (or, with --replace, wiped) database at this broker's schema; then verify it."""
    from broker.audit.signing import checkpoint_dir, load_signer
    from broker.audit.sinks import CheckpointDirectory
    from broker.services import backup
    from broker.services.keys import STALE_AFTER
    from broker.services.runtime import utcnow

    settings = _settings()
    opened = backup.open_backup(source)
    if target is None:
        target_url = settings.resolved_database_url
        if settings.is_embedded:
            _prepare_embedded(settings)
            if opened.manifest.schema_head == _head(target_url):
                _upgrade(settings, "head")
    else:
        target_url = _database_url(target, "--to")
    try:
        signer, _ = load_signer(settings)
    except BrokerError as exc:
        raise _fail(exc) from None
    _reach(target_url, "--to", "nothing was restored")
    restored = _run(
        backup.restore(
            backup=opened,
            target_url=target_url,
            replace=replace,
            public=signer.public,
            running_since=utcnow() - STALE_AFTER,
        )
    )
    click.echo(
        ("wiped the target, then " if restored.replaced else "")
        + f"restored {restored.rows} rows in {len(restored.tables)} tables (audit head seq "
        f"{opened.manifest.audit_seq}, backup manifest {opened.manifest.sha256})"
    )
    problems = []
    if not restored.counts_match:
        problems.append("row counts differ from the backup's manifest (was a broker writing to the target?)")
    if not restored.audit.ok:
        problems.append(f"the audit chain does not verify: {_report_text(restored.audit)}")
    if problems:
        raise click.ClickException("--to: the target holds the restore but " + "; ".join(problems))
    click.echo(f"verified on the target: row counts, the audit chain ({restored.audit.events} records)")
    directory = CheckpointDirectory(checkpoint_dir(settings))
    published = directory.between(0, None)
    if not published and opened.checkpoints:
        directory.ensure(signer.public)
        for signed in opened.checkpoints:
            directory.write(signed)
        for marker in opened.markers:
            directory.write_marker(marker)
        click.echo(
            f"the checkpoint directory {directory.path} was empty: wrote the backup's checkpoints into it"
        )
    elif published and published[-1].seq > opened.manifest.audit_seq:
        click.echo(
            f"the checkpoint directory {directory.path} vouches for seq {published[-1].seq}, past the backup's "
            f"{opened.manifest.audit_seq}: the broker will refuse to start until you accept the loss with\n"
            f"  strongroom-server audit accept-restore --from {source} --reason TEXT"
        )


def _head(url: str) -> str | None:
    from broker.db import migrate

    return migrate.head_revision(url)


@main.group()
def keys() -> None:
    """Key-encryption keys: rotate, rewrap, retire; bind secrets stored before bindings existed."""


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
@click.option(
    "--entry",
    "entry_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON file holding a typed KEK entry (aws-kms or vault-transit, docs/backends.md); "
    "without it a new local key is generated.",
)
def keys_rotate(entry_file: Path | None) -> None:
    """Add a new key to the keyring file and make it current (running brokers reload it; then run `keys rewrap`)."""
    from broker.keys import rotate_file
    from broker.services.runtime import utcnow

    settings = _settings()
    if settings.keyring is not None:
        raise click.ClickException(
            "keys rotate: the keyring comes from STRONGROOM_KEYRING; add a key there and change `current`"
        )
    try:
        entry = None
        if entry_file is not None:
            import json

            try:
                entry = json.loads(entry_file.read_text())
            except ValueError:
                raise click.ClickException(f"--entry: {entry_file} is not valid JSON") from None
            if not isinstance(entry, dict):
                raise click.ClickException(f"--entry: {entry_file} must hold one JSON object")
        kid = rotate_file(settings.resolved_key_file, now=utcnow(), entry=entry)
    except BrokerError as exc:
        raise _fail(exc) from None
    click.echo(
        f"new current key: {kid}; running brokers reload the keyring file within seconds "
        "(restart those that take STRONGROOM_KEYRING), then run `strongroom-server keys rewrap`"
    )


@keys.command("rewrap")
@click.option("--batch", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option(
    "--upstream-versions",
    is_flag=True,
    help="Instead: Vault transit rewrap of every data key under the current (transit) key to that transit "
    "key's newest version, after `transit/keys/NAME/rotate`; the data keys never leave Vault.",
)
def keys_rewrap(batch: int, upstream_versions: bool) -> None:
    """Re-wrap every data key under the current key, online; resumable and idempotent."""
    from broker.main import build_runtime
    from broker.services.keys import refresh_upstream, rewrap

    runtime = build_runtime(_settings())
    job = refresh_upstream if upstream_versions else rewrap

    async def go() -> Any:
        try:
            return await job(
                runtime, batch=batch, on_batch=lambda n: click.echo(f"  {n} re-wrapped", err=True)
            )
        finally:
            await runtime.engine.dispose()

    try:
        report = _run(go())
    except BrokerError as exc:
        raise _fail(exc) from None
    if upstream_versions:
        click.echo(f"refreshed {report.rewrapped} data keys under {report.current} to its newest version")
        return
    click.echo(
        f"{report.rewrapped} moved, {report.already} already under {report.current}"
        + (f"; {report.skipped} changed meanwhile (run it again)" if report.skipped else "")
    )


@keys.command("bind")
def keys_bind() -> None:
    """Bind every secret that has no binding (stored before bindings existed) to its path and version.

    `db upgrade` does this itself when it adds bindings; run it if that could not load the keyring."""
    try:
        count = _bind_all(_settings())
    except BrokerError as exc:
        raise _fail(exc) from None
    click.echo(f"bound {count} secrets; every secret now has a binding")


@keys.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Remove KEY_ID from the keyring file once no data key needs it."""
    from broker.keys import retire_from_file
    from broker.main import build_runtime
    from broker.services.keys import usage

    settings = _settings()
    runtime = build_runtime(settings)
    if key_id == runtime.keys.keyring.current_id:
        raise click.ClickException(
            f"key {key_id} is the current key; rotate to a new key first (`keys rotate`, then `keys rewrap`)"
        )
    if key_id not in runtime.keys.keyring.ids:
        raise click.ClickException(f"key {key_id} is not in the keyring")

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


@main.group()
def audit() -> None:
    """Audit trail: checkpoint keys, checkpoints, verification, retention."""


@audit.command("keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Private key file to create.",
)
def audit_keygen(out: Path) -> None:
    """Write a new Ed25519 checkpoint signing key (0600) and its public key beside it (OUT.pub.pem)."""
    from broker.audit.checkpoint import Signer, generate_private_pem
    from broker.files import write_private

    public_out = out.with_name(out.name + ".pub.pem")
    if out.exists() or public_out.exists():
        raise click.ClickException(f"--out: {out} (or its .pub.pem) exists; refusing to overwrite a key")
    pem = generate_private_pem()
    write_private(out, pem)
    signer = Signer.from_pem(pem)
    write_private(public_out, signer.public.pem())
    click.echo(
        f"wrote {out} (0600) and {public_out}; key id {signer.public.key_id}\n"
        f"set STRONGROOM_AUDIT_SIGNING_KEY_FILE={out} and give {public_out} to your auditors"
    )


def _audit_runtime() -> Any:
    from broker.main import build_runtime

    try:
        return build_runtime(_settings())
    except BrokerError as exc:
        raise _fail(exc) from None


@audit.command("public-key")
def audit_public_key() -> None:
    """Print the public key that verifies this broker's checkpoints (PEM), for auditors."""
    from broker.audit.signing import load_signer

    try:
        signer, _ = load_signer(_settings())
    except BrokerError as exc:
        raise _fail(exc) from None
    click.echo(signer.public.pem().decode("ascii"), nl=False)


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Link every pending event and sign a checkpoint of the head now."""
    from broker.services.audit import chaining

    runtime = _audit_runtime()

    async def go() -> Any:
        try:
            return await chaining.checkpoint_now(runtime)
        finally:
            await runtime.engine.dispose()

    signed = _run(go())
    if signed is None:
        click.echo("nothing new to sign: the newest checkpoint already covers the head")
    else:
        click.echo(f"checkpoint at seq {signed.seq} ({signed.checkpoint.time}) written")


@audit.command("verify")
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify checkpoints with this key (default: the configured signing key's public half).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit_verify(public_key: Path | None, as_json: bool) -> None:
    """Verify the whole chain in the database against the checkpoint directory; exit 1 on a problem."""
    import json

    from broker.audit.checkpoint import CheckpointError, PublicKey
    from broker.services.audit import chaining

    try:
        public = PublicKey.from_pem(public_key.read_bytes()) if public_key else None
    except CheckpointError as exc:
        raise click.ClickException(f"--public-key: {exc}") from None
    runtime = _audit_runtime()

    async def go() -> Any:
        try:
            return await chaining.verify_database(runtime, public=public)
        finally:
            await runtime.engine.dispose()

    report = _run(go())
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        click.echo(_report_text(report))
    if not report.ok:
        sys.exit(1)


@audit.command("accept-restore")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The backup file the database was restored from.",
)
@click.option(
    "--reason", required=True, help="Why the loss is accepted (recorded in the audit trail and the marker)."
)
def audit_accept_restore(source: Path, reason: str) -> None:
    """Accept that the database was restored from FILE: audit it, sign a marker for the lost range, serve again."""
    import getpass
    import socket

    from broker.services import backup
    from broker.services.audit import chaining

    reason = reason.strip()
    if not reason or len(reason) > 300 or not reason.isprintable():
        raise click.BadParameter("must be 1 to 300 printable characters on one line", param_hint="--reason")
    opened = backup.open_backup(source, nothing="nothing was accepted")
    actor = f"{getpass.getuser()}@{socket.gethostname()}"[:128]
    runtime = _audit_runtime()

    async def go() -> Any:
        try:
            return await chaining.accept_restore(
                runtime,
                backup_seq=opened.manifest.audit_seq,
                backup_head=opened.manifest.audit_hash,
                manifest=opened.manifest.sha256,
                actor=actor,
                reason=reason,
            )
        finally:
            await runtime.engine.dispose()

    done = _run(go())
    r = done.marker.restore
    click.echo(
        f"accepted: the chain continues from seq {r.restored_seq}, the backup's head; {r.lost()} of the branch it "
        f"replaced are lost. The acceptance is audit event {r.seq} of the continued chain (by {actor}); the "
        f"superseded checkpoints are kept in {done.set_aside}"
        + (f"; checkpoint at seq {done.checkpoint.seq} written" if done.checkpoint is not None else "")
    )


def _report_text(report: Any) -> str:
    lines = []
    if report.ok:
        lines.append(
            f"ok: {report.events} records (seq {report.first_seq}..{report.last_seq}), "
            f"{report.checkpoints} checkpoints; signed up to seq {report.vouched_to or 'none'}"
        )
    else:
        from broker.audit.verify import failure_line

        lines.append(failure_line(report))
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


@audit.command("prune")
@click.option("--older-than", "days", type=click.IntRange(min=1), required=True, metavar="DAYS")
def audit_prune(days: int) -> None:
    """Delete events older than DAYS, cutting only at a published checkpoint so the rest still verifies."""
    from datetime import timedelta

    from broker.services.audit import retention

    runtime = _audit_runtime()

    async def go() -> tuple[int, int | None]:
        try:
            return await retention.prune(runtime, older_than=timedelta(days=days))
        finally:
            await runtime.engine.dispose()

    gone, anchor = _run(go())
    if anchor is None:
        click.echo("nothing to prune: no published checkpoint is that old")
    else:
        click.echo(f"pruned {gone} events; the chain now starts after the checkpoint at seq {anchor}")


if __name__ == "__main__":
    sys.exit(main())
