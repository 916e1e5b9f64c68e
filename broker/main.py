"""Composition root: settings -> runtime -> app. No logic beyond wiring."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from broker.api import docs, errors
from broker.api.observe import ObservedEdge
from broker.api.routes import audit as audit_routes
from broker.api.routes import auth, compile, deploys, health, importing, projects, secrets
from broker.audit.trail import from_settings as audit_trail
from broker.backends.router import load as load_backends
from broker.config import Settings, get_settings
from broker.console.app import mount as console_mount
from broker.db import migrate
from broker.db.engine import make_engine
from broker.db.units import Units
from broker.errors import Unavailable
from broker.keys import load as load_keys
from broker.oidc import from_file as load_oidc
from broker.services import keys as keys_service
from broker.services.audit import runner as audit_runner
from broker.services.metrics import Metrics
from broker.services.ratelimit import SlidingLimiter
from broker.services.runtime import Runtime, utcnow

# FastAPI's native telemetry, all three signals off (see create_app).
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def build_runtime(settings: Settings, *, create_dev_keys: bool = False) -> Runtime:
    """Load keys and make the engine (no I/O against the database yet)."""
    keys, _ = load_keys(settings, now=utcnow(), create_dev=create_dev_keys)
    backends = load_backends(settings.backends_file) if settings.backends_file is not None else None
    oidc = load_oidc(settings.oidc_file) if settings.oidc_file is not None else None
    trail, created = audit_trail(settings, audit_key=keys.audit_key)
    if created:
        logging.getLogger("strongroom.audit").warning(
            "generated a development audit signing key in %s: checkpoints it signs prove nothing to "
            "someone who can write the data directory; set STRONGROOM_AUDIT_SIGNING_KEY_FILE for production",
            settings.data_dir,
        )
    engine = make_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
    return Runtime(
        settings=settings,
        engine=engine,
        units=Units(engine),
        keys=keys,
        limiter=SlidingLimiter(
            "auth", engine, limit=settings.auth_failure_limit, window=float(settings.auth_failure_window)
        ),
        fingerprint_limiter=SlidingLimiter(
            "fingerprint",
            engine,
            limit=settings.audit_fingerprint_limit,
            window=float(settings.audit_fingerprint_window),
        ),
        backends=backends,
        audit=trail,
        oidc=oidc,
    )


def create_app(runtime: Runtime, *, check_schema: bool = True, freeze_heap: bool = False) -> ASGIApp:
    """The ASGI application: FastAPI routes behind the edge middleware (observed: metrics, request id, logs).
    `freeze_heap` (a served process): the objects alive once started are left out of garbage collection."""
    metrics = Metrics()
    metrics.instrument(runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if check_schema:
            current = await migrate.current_revision(runtime.engine)
            head = migrate.head_revision(runtime.settings.resolved_database_url)
            if current != head:
                raise Unavailable(
                    f"database schema is at {current or 'nothing'} but this broker needs {head}; "
                    "run `strongroom-server db upgrade` first"
                )
            # Compare the database with the newest external audit checkpoint; start the chainer.
            await audit_runner.start(runtime)
            # Report the keys this broker holds, then keep following the keyring file (online rotation).
            await keys_service.heartbeat(runtime)
            stop_keys = asyncio.Event()
            watcher = asyncio.create_task(keys_service.watch(runtime, stop_keys))
        if freeze_heap:
            # What is alive once started (modules, routes, compiled statements, schemas) lives as long as
            # the process; frozen, the collector's full passes no longer walk it on every few thousand
            # requests (7% of a whole environment's read, measured in process).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if check_schema:
                stop_keys.set()
                await watcher
                try:
                    await keys_service.forget(runtime)
                except Exception as exc:  # its row then ages out; shutting down matters more
                    logging.getLogger("strongroom.keys").warning(
                        "could not remove this broker's key heartbeat: %s", type(exc).__name__
                    )
                await audit_runner.stop(runtime)
            await runtime.units.close()
            await runtime.engine.dispose()
            metrics.close(runtime.settings)

    app = FastAPI(
        title="Strongroom broker",
        version="1",
        lifespan=lifespan,
        # The docs page is added below from the packaged Swagger UI (broker/api/docs.py), not from a CDN.
        docs_url=None,
        redoc_url=None,
        # `/secrets/` (an empty name) must be refused, not redirected to another route.
        redirect_slashes=False,
        # FastAPI's own OpenTelemetry spans would carry each request's path and query string (secret
        # names); the broker observes requests itself, by route template (api/observe.py). Off, it also
        # no longer asks the three global providers on every request.
        telemetry=NO_TELEMETRY,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    errors.install(app)
    # The router tries routes in order: the most requested ones (reading a secret) go first, the docs
    # pages after every API route. No two routes' templates match the same path, so the order changes
    # nothing else.
    for router in (
        secrets.router,
        health.router,
        auth.router,
        projects.router,
        compile.router,
        deploys.router,
        importing.router,
        audit_routes.router,
    ):
        app.include_router(router)
    app.add_route("/docs", docs.docs_endpoint("/openapi.json", app.title), include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", docs.oauth2_redirect, include_in_schema=False)
    app.router.routes.append(console_mount(runtime))
    return ObservedEdge(app, runtime, metrics, log_requests=runtime.settings.logs_requests)


def app_factory() -> ASGIApp:
    """Entry point for uvicorn workers: settings from the environment, keys must already exist."""
    return create_app(build_runtime(get_settings()), freeze_heap=True)
