"""What every service needs, built once by the composition root and passed down."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.audit.trail import AuditTrail
from broker.backends.router import Backends
from broker.config import Settings
from broker.db.units import Units
from broker.errors import BrokerError
from broker.keys import KeyMaterial, reload_if_changed
from broker.oidc import Oidc
from broker.services.ratelimit import SlidingLimiter

log = logging.getLogger("strongroom.keys")


def utcnow() -> datetime:
    """The server's clock, UTC."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Engine, keys, settings and clock for the services."""

    settings: Settings
    engine: AsyncEngine
    keys: KeyMaterial
    # Failed authentications per canonical principal and per source address (shared through the database).
    limiter: SlidingLimiter
    audit: AuditTrail
    # Fingerprint look-ups per token accessor and per source address.
    fingerprint_limiter: SlidingLimiter
    # Runs units of work (the SQLite group-commit writer, or asyncpg connections; see broker/db/units.py).
    units: Units
    clock: Callable[[], datetime] = utcnow
    backends: Backends | None = None
    # This process's name in broker_keyrings (services/keys.py heartbeat): host, pid and a random part.
    instance: str = field(
        default_factory=lambda: f"{socket.gethostname()[:160]}:{os.getpid()}:{secrets.token_hex(4)}"
    )
    # The last readiness probe of a remote current key (services/health.py): when it started, and its task.
    remote_key_probe: tuple[float, asyncio.Future[None]] | None = None

    def refresh_keys(self) -> bool:
        """Reload the keyring file if it changed on disk (one stat() when it has not); True if it did.

        Rotation is online: a running broker picks up a rotated file here (from the periodic check, or
        at once when a row names a key it lacks). A file that cannot be used is logged and the keys in
        memory stay."""
        try:
            fresh = reload_if_changed(self.keys, self.settings)
        except BrokerError as exc:
            log.warning("keyring not reloaded: %s", exc.message)
            return False
        except OSError as exc:
            log.warning("keyring not reloaded: %s", exc.strerror or type(exc).__name__)
            return False
        if fresh is None:
            return False
        self.keys = fresh
        log.info(
            "keyring reloaded: current key %s; keys %s",
            fresh.keyring.current_id,
            ", ".join(fresh.keyring.ids),
        )
        return True

    # Trusted OIDC issuers, roles and their key sets (None: OIDC login is off).
    oidc: Oidc | None = None
