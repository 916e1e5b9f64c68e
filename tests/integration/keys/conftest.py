"""Fixtures for KEK rotation: a keyring file made by the CLI, runtimes built from it, a seeded broker."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from broker.cli import main as server_cli
from broker.config import Settings, get_settings
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.main import build_runtime, create_app
from broker.models import environments, secret_versions
from broker.models import secrets as secrets_table
from broker.services.auth import bootstrap_admin
from broker.services.runtime import Runtime

BASE = "/v1/projects/microblog/environments"


@dataclass
class KeyedBroker:
    """A database plus a keyring file on disk; every runtime is built from the file as it is now."""

    db_url: str
    data_dir: Path
    key_file: Path
    token: str = ""
    # Expected current values: (environment, name) -> value; and every version's value by row.
    current: dict[tuple[str, str], str] = field(default_factory=dict)
    versions: dict[tuple[str, str, int], str] = field(default_factory=dict)

    def settings(self) -> Settings:
        return Settings(database_url=self.db_url, data_dir=self.data_dir, key_file=self.key_file)

    def runtime(self) -> Runtime:
        return build_runtime(self.settings())

    def key_ids(self) -> list[str]:
        return list(json.loads(self.key_file.read_text())["keys"])

    def current_key(self) -> str:
        return str(json.loads(self.key_file.read_text())["current"])

    def cli(self, *args: str) -> Result:
        """Run `strongroom-server ARGS` against this database and key file."""
        env = {
            "STRONGROOM_DATABASE_URL": self.db_url,
            "STRONGROOM_KEY_FILE": str(self.key_file),
            "STRONGROOM_DATA_DIR": str(self.data_dir),
            "STRONGROOM_KEYRING": None,
        }
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(server_cli, list(args), env=env)
        finally:
            get_settings.cache_clear()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def resolved_expected(self, environment: str) -> dict[str, str]:
        """What GET .../resolved should return for production (inheriting common) or common."""
        out = {name: v for (env, name), v in self.current.items() if env == "common"}
        if environment == "production":
            out.update({name: v for (env, name), v in self.current.items() if env == "production"})
        return out


def http(rt: Runtime) -> httpx.AsyncClient:
    """An in-process HTTP client on the app (no lifespan: the schema is known to be current)."""
    transport = httpx.ASGITransport(app=create_app(rt, check_schema=False), client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://broker")


async def seed(kb: KeyedBroker, rt: Runtime, *, per_env: int = 12) -> None:
    """Bootstrap the admin, create microblog/common/production and write secrets (some twice)."""
    created = await bootstrap_admin(rt)
    assert created is not None
    async with http(rt) as c:
        r = await c.post(
            "/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret}
        )
        assert r.status_code == 200, r.text
        kb.token = r.json()["token"]
        h = kb.headers
        assert (await c.post("/v1/projects", json={"slug": "microblog"}, headers=h)).status_code == 201
        assert (await c.post(BASE, json={"slug": "common"}, headers=h)).status_code == 201
        r = await c.post(BASE, json={"slug": "production", "parent": "common"}, headers=h)
        assert r.status_code == 201, r.text
        for env in ("common", "production"):
            for i in range(per_env):
                name = f"SECRET_{i:02d}"
                # Every third secret gets a second version; the same names exist in both environments,
                # so resolution has to pick the nearest.
                for version in range(1, 3 if i % 3 == 0 else 2):
                    value = f"{env}-{name}-v{version}-{secrets.token_hex(8)}"
                    r = await c.put(f"{BASE}/{env}/secrets/{name}", json={"value": value}, headers=h)
                    assert r.status_code == 200, r.text
                    assert r.json()["version"] == version
                    kb.current[(env, name)] = value
                    kb.versions[(env, name, version)] = value
        # A production-only secret.
        r = await c.put(f"{BASE}/production/secrets/ONLY_PROD", json={"value": "only-prod"}, headers=h)
        assert r.status_code == 200, r.text
        kb.current[("production", "ONLY_PROD")] = "only-prod"
        kb.versions[("production", "ONLY_PROD", 1)] = "only-prod"


async def stored_rows(rt: Runtime) -> dict[int, tuple[bytes, bytes, str]]:
    """Every version row: id -> (ciphertext, wrapped_dek, kek_id)."""
    async with rt.engine.connect() as conn:
        result = await conn.execute(
            select(
                secret_versions.c.id,
                secret_versions.c.ciphertext,
                secret_versions.c.wrapped_dek,
                secret_versions.c.kek_id,
            )
        )
        return {int(r[0]): (bytes(r[1]), bytes(r[2]), str(r[3])) for r in result.all()}


async def decrypt_every_row(rt: Runtime) -> dict[tuple[str, str, int], str]:
    """Open every stored version directly with the runtime's keyring: (env, name, version) -> value."""
    async with rt.engine.connect() as conn:
        result = await conn.execute(
            select(
                environments.c.project_id,
                environments.c.id,
                environments.c.slug,
                secrets_table.c.name,
                secret_versions.c.version,
                secret_versions.c.ciphertext,
                secret_versions.c.wrapped_dek,
                secret_versions.c.kek_id,
            )
            .join(secrets_table, secrets_table.c.id == secret_versions.c.secret_id)
            .join(environments, environments.c.id == secrets_table.c.environment_id)
        )
        rows = result.all()
    out = {}
    for project_id, env_id, env, name, version, ct, wrapped, kek in rows:
        aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
        sealed = Sealed(ciphertext=bytes(ct), wrapped_dek=bytes(wrapped), kek_id=kek)
        out[(env, name, version)] = rt.keys.keyring.open(sealed, aad).decode()
    return out


async def read_all_over_http(kb: KeyedBroker, rt: Runtime) -> None:
    """Every current value, every older version and both resolved views read back identically."""
    async with http(rt) as c:
        for (env, name), value in kb.current.items():
            r = await c.get(f"{BASE}/{env}/secrets/{name}", headers=kb.headers)
            assert r.status_code == 200, r.text
            assert r.json()["value"] == value
        for (env, name, version), value in kb.versions.items():
            r = await c.get(f"{BASE}/{env}/secrets/{name}", params={"version": version}, headers=kb.headers)
            assert r.status_code == 200, r.text
            assert r.json()["value"] == value
        for env in ("common", "production"):
            r = await c.get(f"{BASE}/{env}/resolved", headers=kb.headers)
            assert r.status_code == 200, r.text
            got = {k: v["value"] for k, v in r.json()["values"].items()}
            assert got == kb.resolved_expected(env)


@pytest.fixture
def keyed(db_url: str, tmp_path: Path) -> Iterator[KeyedBroker]:
    """A migrated database and a keyring file written by `strongroom-server keys generate --out`."""
    key_file = tmp_path / "keys" / "keyring.json"
    key_file.parent.mkdir(mode=0o700)
    kb = KeyedBroker(db_url=db_url, data_dir=tmp_path / "data", key_file=key_file)
    r = kb.cli("keys", "generate", "--out", str(key_file))
    assert r.exit_code == 0, r.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    doc = json.loads(key_file.read_text())
    assert doc["dev"] is False and len(doc["keys"]) == 1
    for material in [*doc["keys"].values(), doc["hmac_key"]]:
        assert material not in r.output
    yield kb
