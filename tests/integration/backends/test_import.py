"""`POST .../import` (and `strongroom import-backend`): copy Vault KV v2 or AWS Secrets Manager secrets into a
database environment, with a dry run that lists what would change and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.backends.conftest import (
    AWS_ACCOUNT,
    PROJECT,
    REGION,
    aws_backend,
    backends_doc,
    start_broker,
    stop_broker,
    vault_backend,
    write_private,
)
from tests.support import upstreams

IMPORT = f"/v1/projects/{PROJECT}/environments/staging/import"
SECRETS = f"/v1/projects/{PROJECT}/environments/staging/secrets"


def actions(body: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["action"] for c in body["changes"]}


@pytest.fixture
def vault_world(tmp_path: Path, bao: upstreams.Bao) -> Iterator[tuple[Any, dict[str, str], upstreams.Bao]]:
    bao.api("POST", "secret/data/legacy/app/production/DB_URL", {"data": {"value": "postgres://db"}})
    bao.api(
        "POST", "secret/data/legacy/app/production/bundle", {"data": {"API_KEY": "k1", "SMTP_PASS": "p1"}}
    )
    bao.api("POST", "secret/data/legacy/app/production/bad", {"data": {"not-a-name": "x"}})
    token_file = write_private(tmp_path / "vault-token", bao.token)
    doc = backends_doc({"legacy": vault_backend(bao.address, token_file, "legacy")}, [])
    client, rt, h = start_broker(tmp_path, doc)
    try:
        yield client, h, bao
    finally:
        stop_broker(client, rt)


def test_vault_dry_run_lists_and_writes_nothing_then_import_copies(vault_world: Any) -> None:
    client, h, bao = vault_world
    body = {"source": "vault://secret/legacy/app/production", "dry_run": True}
    r = client.post(IMPORT, json=body, headers=h)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["dry_run"] is True and got["backend"] == "legacy"
    assert actions(got) == {
        "API_KEY": "create",
        "DB_URL": "create",
        "SMTP_PASS": "create",
        "not-a-name": "skip",
    }
    assert "postgres://db" not in r.text and "k1" not in r.text
    assert client.get(SECRETS, headers=h).json()["secrets"] == []

    r = client.post(IMPORT, json={**body, "dry_run": False}, headers=h)
    assert r.status_code == 200, r.text
    values = {n: client.get(f"{SECRETS}/{n}", headers=h).json() for n in ("API_KEY", "DB_URL", "SMTP_PASS")}
    assert {n: v["value"] for n, v in values.items()} == {
        "API_KEY": "k1",
        "DB_URL": "postgres://db",
        "SMTP_PASS": "p1",
    }
    assert all("backend" not in v for v in values.values())  # now in the database

    again = client.post(IMPORT, json=body, headers=h).json()
    assert actions(again)["DB_URL"] == "unchanged"
    bao.api("POST", "secret/data/legacy/app/production/DB_URL", {"data": {"value": "postgres://db2"}})
    assert actions(client.post(IMPORT, json=body, headers=h).json())["DB_URL"] == "skip"
    r = client.post(IMPORT, json={**body, "dry_run": False, "overwrite": True}, headers=h)
    assert actions(r.json())["DB_URL"] == "update"
    got = client.get(f"{SECRETS}/DB_URL", headers=h).json()
    assert (got["value"], got["version"]) == ("postgres://db2", 2)


def test_import_needs_admin_and_an_allowed_project(vault_world: Any) -> None:
    client, h, _ = vault_world
    r = client.post(
        "/v1/identities",
        json={
            "name": "writer",
            "type": "machine",
            "scopes": [{"project": PROJECT, "environments": "*", "actions": ["read", "write"]}],
        },
        headers=h,
    )
    ident = r.json()
    tok = client.post(
        "/v1/auth/token", json={"client_id": ident["client_id"], "client_secret": ident["client_secret"]}
    ).json()["token"]
    r = client.post(
        IMPORT,
        json={"source": "vault://secret/legacy/app/production", "dry_run": True},
        headers={"Authorization": f"Bearer {tok}"},
    )
    assert r.status_code == 403, r.text
    assert client.post("/v1/projects", json={"slug": "other"}, headers=h).status_code == 201
    assert client.post("/v1/projects/other/environments", json={"slug": "prod"}, headers=h).status_code == 201
    r = client.post(
        "/v1/projects/other/environments/prod/import",
        json={"source": "vault://secret/legacy/app/production"},
        headers=h,
    )
    assert r.status_code == 403, r.text
    assert "does not allow imports into project other" in r.json()["detail"]


@pytest.mark.parametrize("layout", ["per-key", "json"])
def test_aws_import(tmp_path: Path, moto: upstreams.Moto, layout: str) -> None:
    sm = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=moto.endpoint,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    if layout == "per-key":
        sm.create_secret(Name="legacy/prod/DB_URL", SecretString="postgres://db")
        sm.create_secret(Name="legacy/prod/API_KEY", SecretString="k1")
        sm.create_secret(Name="legacy/prodx/OTHER", SecretString="no")
        source = "aws-sm://legacy/prod"
    else:
        sm.create_secret(
            Name="legacy/prod", SecretString=json.dumps({"DB_URL": "postgres://db", "API_KEY": "k1"})
        )
        arn = sm.describe_secret(SecretId="legacy/prod")["ARN"]
        assert f":{AWS_ACCOUNT}:" in arn
        source = f"aws-sm://{arn}"
    doc = backends_doc({"legacy": aws_backend(moto.endpoint, "legacy", layout=layout)}, [])
    client, rt, h = start_broker(tmp_path, doc)
    try:
        r = client.post(IMPORT, json={"source": source, "dry_run": True}, headers=h)
        assert r.status_code == 200, r.text
        assert actions(r.json()) == {"API_KEY": "create", "DB_URL": "create"}
        assert client.post(IMPORT, json={"source": source}, headers=h).status_code == 200
        assert client.get(f"{SECRETS}/DB_URL", headers=h).json()["value"] == "postgres://db"
    finally:
        stop_broker(client, rt)


def test_cli_import_backend_prints_names_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cli.client import ImportChange, ImportResult
    from cli.root import strongroom

    seen: dict[str, Any] = {}

    class Client:
        def import_from_backend(self, **kw: Any) -> ImportResult:
            seen.update(kw)
            return ImportResult(
                source=kw["source"],
                backend="legacy",
                dry_run=kw["dry_run"],
                changes=(ImportChange("DB_URL", "create", None, "secret/legacy/DB_URL", "3"),),
            )

    monkeypatch.setattr("cli.session.Session.client", lambda self, *a, **k: Client())
    result = CliRunner().invoke(
        strongroom,
        ["import-backend", "-p", PROJECT, "-e", "staging", "--from", "vault://secret/legacy", "--dry-run"],
        env={"STRONGROOM_URL": "http://127.0.0.1:1", "STRONGROOM_TOKEN": "srt_x"},
    )
    assert result.exit_code == 0, result.output
    assert "DB_URL" in result.output and "create" in result.output
    assert "Dry run: 1 would be written" in result.output
    assert seen["dry_run"] is True and seen["source"] == "vault://secret/legacy"
    bad = CliRunner().invoke(
        strongroom, ["import-backend", "-p", PROJECT, "-e", "staging", "--from", "http://x"]
    )
    assert bad.exit_code == 2
