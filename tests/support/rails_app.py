"""A Rails app deployed with Kamal: its strongroom.yml and the values a real one keeps, awkward ones included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broker.compiler.references import StoredValue

MANIFEST = Path(__file__).parent / "rails_app" / "strongroom.yml"

VALUES = {
    "common": {
        "KAMAL_REGISTRY_PASSWORD": "ghp_registry$token#1'\"x",
        "FRONTEND_HOST": "microblog.example.com",
    },
    "production": {
        "SECRET_KEY_BASE": "9f2c" * 32,
        "RAILS_MASTER_KEY": "0123456789abcdef0123456789abcdef",
        "DATABASE_URL": "postgres://microblog:pa$$w0rd#with'quote\"s@db.internal:5432/microblog",
        "POSTGRES_PASSWORD": "pa$$w0rd#with'quote\"s",
        "TLS_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
    },
    "staging": {
        "SECRET_KEY_BASE": "7a1b" * 32,
        "RAILS_MASTER_KEY": "fedcba9876543210fedcba9876543210",
        "DATABASE_URL": "postgres://microblog:st$ging@db.staging:5432/microblog",
        "POSTGRES_PASSWORD": "st$ging",
        "TLS_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nstaging\n-----END PRIVATE KEY-----\n",
    },
}
NOT_SENSITIVE = {"FRONTEND_HOST"}
PARENTS = {"common": None, "production": "common", "staging": "common"}


def manifest_text() -> str:
    """The app's strongroom.yml."""
    return MANIFEST.read_text()


def sensitive_values() -> list[str]:
    """Every sensitive value (FRONTEND_HOST is public and appears in clear values on purpose)."""
    return [v for values in VALUES.values() for k, v in values.items() if k not in NOT_SENSITIVE]


def lookup(environment: str, name: str) -> StoredValue | None:
    """The stored values as the broker resolves them: the environment's own, else its parent's."""
    env: str | None = environment
    while env is not None:
        if name in VALUES.get(env, {}):
            return StoredValue(VALUES[env][name], name not in NOT_SENSITIVE, 1, env)
        env = PARENTS.get(env)
    return None


def lookup_with(extra: dict[str, str]) -> Callable[[str, str], StoredValue | None]:
    """`lookup` with some sensitive values added in every environment."""

    def look(environment: str, name: str) -> StoredValue | None:
        if name in extra:
            return StoredValue(extra[name], True, 1, environment)
        return lookup(environment, name)

    return look
