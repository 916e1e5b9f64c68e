"""Liveness and readiness: can the broker reach its database, use its current key and record audit events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from broker.audit.sinks import FileSink
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.health")

# A readiness probe answers within this bound even when a check hangs (a database or key service away).
CHECK_TIMEOUT = 5.0
_PROBE = b"strongroom readiness probe"
_PROBE_AAD = b"strongroom/readyz"


async def database_ok(rt: Runtime) -> bool:
    """Whether a trivial query succeeds."""
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def _database(rt: Runtime) -> None:
    # One row of a real table: on SQLite `SELECT 1` would pass without reading the file.
    async with rt.engine.connect() as conn:
        await conn.execute(text("SELECT version_num FROM alembic_version"))


def _seal_and_open(rt: Runtime) -> None:
    keyring = rt.keys.keyring
    if keyring.open(keyring.seal(_PROBE, _PROBE_AAD), _PROBE_AAD) != _PROBE:
        raise RuntimeError("the current key did not give back what it sealed")


# /readyz answers anyone: with the current key in AWS KMS or Vault transit each probe would be two calls to
# that service, so a flood of probes could spend its quota and throttle real reads. One probe per process per
# this many seconds reaches it; the others share that answer (a failure included).
REMOTE_KEY_CHECK_EVERY = 10.0


async def _keyring(rt: Runtime) -> None:
    if rt.keys.keyring.current_id not in rt.keys.remote:
        _seal_and_open(rt)
        return
    now = time.monotonic()
    held = rt.remote_key_probe
    if held is None or now - held[0] >= REMOTE_KEY_CHECK_EVERY:
        # A network call: off the event loop, and one future that concurrent probes await together.
        held = rt.remote_key_probe = (now, asyncio.ensure_future(asyncio.to_thread(_seal_and_open, rt)))
    await asyncio.shield(held[1])


async def _audit_sinks(rt: Runtime) -> None:
    trail = rt.audit
    for sink in trail.sinks:
        if isinstance(sink, FileSink):
            await asyncio.to_thread(sink.check)  # opens it for appending, as a write does
        elif not trail.sink_health(sink.name).ok:
            # A network sink (syslog) is judged by its last write: a probe must not add messages to it.
            raise RuntimeError("the sink's last write failed")


def _directory_writable(rt: Runtime) -> None:
    fd, name = tempfile.mkstemp(prefix=".readyz-", dir=rt.audit.checkpoints.path)
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


async def _checkpoint_directory(rt: Runtime) -> None:
    await asyncio.to_thread(_directory_writable, rt)


CHECKS: dict[str, Callable[[Runtime], Awaitable[None]]] = {
    "database": _database,
    "keyring": _keyring,
    "audit_sinks": _audit_sinks,
    "checkpoint_directory": _checkpoint_directory,
}


async def _run(name: str, check: Callable[[Runtime], Awaitable[None]], rt: Runtime) -> tuple[str, bool]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check(rt)
    except Exception as exc:
        # The type only: a driver's or the OS's message may name a host, a user or a path.
        log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return name, False
    return name, True


async def readiness(rt: Runtime) -> dict[str, bool]:
    """Each readiness check by name and whether it passed (run concurrently, each bounded in time)."""
    results = await asyncio.gather(*(_run(name, check, rt) for name, check in CHECKS.items()))
    return dict(results)
