"""The compile, check, named-values and diff routes against SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import yaml

from broker.domain.manifest import deep_merge
from tests.integration.compile.conftest import rails_manifest
from tests.integration.secrets.conftest import PROJECT, Api, problem
from tests.support.rails_app import VALUES as RAILS_VALUES
from tests.support.rails_app import sensitive_values


def compile_(api: Api, env: str, targets: list[str], manifest: str | None = None, **extra: Any) -> Any:
    return api.client.post(
        f"{api.env_url(env)}/compile",
        json={"manifest": rails_manifest() if manifest is None else manifest, "targets": targets, **extra},
        headers=api.h,
    )


def check(api: Api, env: str, targets: list[str], manifest: str | None = None) -> Any:
    return api.client.post(
        f"{api.env_url(env)}/check",
        json={"manifest": rails_manifest() if manifest is None else manifest, "targets": targets},
        headers=api.h,
    )


def files(response: Any) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {f["path"]: f["content"] for f in response.json()["files"]}


def read_keys(event: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """name -> (environment, version) of every value the event says was read, each with a fingerprint."""
    items = json.loads(event["fingerprints"])
    assert all(item["fingerprint"].startswith("hmac-sha256:") for item in items)
    return {item["name"]: (item["environment"], item["version"]) for item in items}


def every_value() -> list[str]:
    return sensitive_values()


def test_kamal_compile_holds_no_value_and_names_every_secret(rails: Api) -> None:
    r = compile_(rails, "production", ["kamal"])
    out = files(r)
    assert r.headers["cache-control"] == "no-store"
    assert set(out) == {
        "config/deploy.yml",
        "config/deploy.production.yml",
        ".kamal/secrets-common",
        ".kamal/secrets.production",
    }
    text = "\n".join(out.values())
    for value in every_value():
        assert value not in text
    for f in r.json()["files"]:
        assert f["holds_values"] is False
    merged = deep_merge(
        yaml.safe_load(out["config/deploy.yml"]), yaml.safe_load(out["config/deploy.production.yml"])
    )
    assert merged["env"]["secret"] == ["SECRET_KEY_BASE", "RAILS_MASTER_KEY", "DATABASE_URL"]
    assert merged["registry"]["password"] == ["KAMAL_REGISTRY_PASSWORD"]
    assert (
        "STRONGROOM_SECRETS=$(strongroom kamal fetch --dotenv ${STRONGROOM_DOTENV} -p microblog -e production"
        in out[".kamal/secrets.production"]
    )
    keys = {(k["name"], k["environment"]) for k in r.json()["keys"]}
    assert ("KAMAL_REGISTRY_PASSWORD", "common") in keys and ("DATABASE_URL", "production") in keys
    assert ("FRONTEND_HOST", "common") in keys


def test_compile_is_audited_with_the_keys_read_and_no_value(rails: Api) -> None:
    r = compile_(rails, "production", ["kamal", "dotenv-export"])
    assert r.status_code == 200, r.text
    event = rails.one_audit(r.headers["x-request-id"])
    assert event["action"] == "compile" and event["outcome"] == "ok"
    assert event["environment"] == "production"
    seen = read_keys(event)
    assert seen["DATABASE_URL"] == ("production", 1)
    assert seen["KAMAL_REGISTRY_PASSWORD"] == ("common", 1)
    assert seen["FRONTEND_HOST"] == ("common", 1)
    assert "TLS_PRIVATE_KEY" not in seen  # stored, but not named by the manifest: never read
    for value in every_value():
        assert value not in str(event)


def test_dotenv_export_carries_the_values_exactly(rails: Api) -> None:
    out = files(compile_(rails, "production", ["json"]))
    (content,) = out.values()
    data = json.loads(content)
    assert data["DATABASE_URL"] == RAILS_VALUES["production"]["DATABASE_URL"]
    assert data["FRONTEND_URL"] == "https://microblog.example.com"
    assert data["RAILS_ENV"] == "production"
    assert "KAMAL_REGISTRY_PASSWORD" not in data  # a registry login secret, not an app variable


def test_staging_view_and_destination_file(rails: Api) -> None:
    out = files(compile_(rails, "staging", ["kamal"]))
    dest = yaml.safe_load(out["config/deploy.staging.yml"])
    assert dest["env"]["clear"] == {
        "RAILS_ENV": "staging",
        "FRONTEND_URL": "https://staging.microblog.example.com",
    }
    assert dest["proxy"]["host"] == "staging.microblog.example.com"
    base = files(compile_(rails, "production", ["kamal"]))["config/deploy.yml"]
    assert out["config/deploy.yml"] == base, "deploy.yml must not depend on the environment compiled"


def test_missing_key_fails_compile_and_check_names_it(rails: Api) -> None:
    manifest = rails_manifest().replace("- DATABASE_URL", "- DATABASE_URL\n    - NOPE_MISSING")
    body = problem(compile_(rails, "production", ["kamal"], manifest), 400)
    assert "env/secret/3: NOPE_MISSING is not stored in production" in body["detail"]
    r = check(rails, "production", ["kamal"], manifest)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is False
    assert any(p["path"] == "env/secret/3" for p in r.json()["problems"])


def test_value_kamal_cannot_carry_is_refused_with_the_alternative(rails: Api) -> None:
    manifest = rails_manifest().replace("- DATABASE_URL", "- DATABASE_URL\n    - TLS_PRIVATE_KEY")
    body = problem(compile_(rails, "production", ["kamal"], manifest), 400)
    assert "TLS_PRIVATE_KEY" in body["detail"] and "file mount" in body["detail"]
    assert "BEGIN PRIVATE KEY" not in body["detail"]
    r = check(rails, "production", ["kamal", "json"], manifest)
    problems = r.json()["problems"]
    assert [p["path"] for p in problems] == ["targets/kamal"]
    assert files(compile_(rails, "production", ["json"], manifest))


def test_invalid_manifest_names_the_path(rails: Api) -> None:
    manifest = rails_manifest().replace("- 192.0.2.10\n", "- not a host\n", 1)
    body = problem(compile_(rails, "production", ["kamal"], manifest), 400)
    assert "roles/web/hosts/0: must be a host name or address (line 12)" in body["detail"]


def test_project_mismatch_and_unknown_target(rails: Api) -> None:
    problem(
        compile_(
            rails, "production", ["kamal"], rails_manifest().replace("project: microblog", "project: other")
        ),
        400,
    )
    problem(compile_(rails, "production", ["nope"]), 400)


def test_read_needs_every_environment_referenced(rails: Api) -> None:
    token = rails.token_for([{"project": PROJECT, "environments": "production", "actions": ["read"]}])
    manifest = rails_manifest().replace("https://${FRONTEND_HOST}", "https://${staging.FRONTEND_HOST}")
    r = rails.client.post(
        f"{rails.env_url('production')}/compile",
        json={"manifest": manifest, "targets": ["kamal"]},
        headers=token,
    )
    problem(r, 403)


def test_named_values_all_or_nothing(rails: Api) -> None:
    url = f"{rails.env_url('production')}/values"
    r = rails.client.post(url, json={"names": ["DATABASE_URL", "KAMAL_REGISTRY_PASSWORD"]}, headers=rails.h)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    values = r.json()["values"]
    assert values["DATABASE_URL"]["value"] == RAILS_VALUES["production"]["DATABASE_URL"]
    assert values["KAMAL_REGISTRY_PASSWORD"]["environment"] == "common"
    event = rails.one_audit(r.headers["x-request-id"])
    assert event["action"] == "secret.read_many"
    assert set(read_keys(event)) == {"DATABASE_URL", "KAMAL_REGISTRY_PASSWORD"}
    missing = rails.client.post(url, json={"names": ["DATABASE_URL", "NOPE"]}, headers=rails.h)
    assert "NOPE" in problem(missing, 404)["detail"]
    problem(rails.client.post(url, json={"names": ["bad-name"]}, headers=rails.h), 400)


def test_diff_by_fingerprint_never_values(rails: Api) -> None:
    rails.put("production", "ONLY_PROD", "x1")
    rails.put("staging", "ONLY_STAGING", "x2")
    r = rails.client.get(
        f"/v1/projects/{PROJECT}/diff", params={"a": "staging", "b": "production"}, headers=rails.h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["only_in_a"] == ["ONLY_STAGING"]
    assert body["only_in_b"] == ["ONLY_PROD"]
    assert "KAMAL_REGISTRY_PASSWORD" in body["same"]  # inherited by both from common
    different = {d["name"]: d for d in body["different"]}
    assert set(different) == {
        "DATABASE_URL",
        "POSTGRES_PASSWORD",
        "RAILS_MASTER_KEY",
        "SECRET_KEY_BASE",
        "TLS_PRIVATE_KEY",
    }
    assert different["DATABASE_URL"]["a"]["fingerprint"].startswith("hmac-sha256:")
    for value in every_value():
        assert value not in r.text


def test_diff_fingerprints_are_the_audit_trails(rails: Api) -> None:
    r = compile_(rails, "production", ["kamal"])
    audited = {
        item["name"]: item["fingerprint"]
        for item in json.loads(rails.one_audit(r.headers["x-request-id"])["fingerprints"])
    }
    d = rails.client.get(
        f"/v1/projects/{PROJECT}/diff", params={"a": "staging", "b": "production"}, headers=rails.h
    )
    different = {x["name"]: x for x in d.json()["different"]}
    assert different["DATABASE_URL"]["b"]["fingerprint"] == audited["DATABASE_URL"]


def test_diff_fingerprints_are_stable_across_answers_and_found_by_the_audit_look_up(rails: Api) -> None:
    """What `strongroom diff` and docs/manifest.md promise: not a per-answer key, the audit trail's HMAC."""

    def diff() -> dict[str, Any]:
        r = rails.client.get(
            f"/v1/projects/{PROJECT}/diff", params={"a": "staging", "b": "production"}, headers=rails.h
        )
        assert r.status_code == 200, r.text
        return {x["name"]: x for x in r.json()["different"]}

    first, second = diff(), diff()
    assert first == second
    value = RAILS_VALUES["production"]["DATABASE_URL"]
    looked_up = rails.client.post("/v1/audit/fingerprint", json={"value": value}, headers=rails.h)
    assert looked_up.status_code == 200, looked_up.text
    assert first["DATABASE_URL"]["b"]["fingerprint"] == looked_up.json()["fingerprint"]


def test_target_lists_agree() -> None:
    from typing import get_args

    from broker.api.schemas.compile import Target
    from broker.renderers.registry import TARGETS
    from cli.commands.compile import TARGETS as CLI_TARGETS

    assert set(get_args(Target)) == set(TARGETS) == set(CLI_TARGETS)
