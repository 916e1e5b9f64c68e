"""Constants and helpers shared by the CLI unit tests (fixtures are in conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from click.testing import Result

CLIENT_ID = "alice-laptop"
T0 = 1_900_000_000.0

Invoke = Callable[..., Result]


def canary() -> str:
    """A random marker that must never show up where it is not asked for."""
    return f"canary-{secrets.token_hex(16)}"
