"""The deploy routes on SQLite and PostgreSQL: lifecycle, the deploy token's confinement, use limit and TTL,
strict bodies, the ledger and status, and no value in any audit record, error body or log line."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.deploys.conftest import BASE, ENV, MANIFEST, PROJECT, Shop, bearer, scope

LEDGER = ("deploys", "deploy_hosts", "deploy_keys", "deploy_host_keys")
PLAN_KEYS = ["BUILD_TOKEN", "DB_PASSWORD", "EU_KEY", "JOB_KEY", "REGISTRY_PASSWORD", "SECRET_KEY_BASE"]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def deployer(shop: Shop, **kw: Any) -> str:
    """A machine identity's token with read on every environment of the project."""
    return shop.broker.login([scope(PROJECT, ["read"])], name="deployer", **kw).token


def env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def fingerprint(shop: Shop, value: str) -> str:
    r = shop.client.post("/v1/audit/fingerprint", json={"value": value}, headers=shop.broker.admin.headers)
    assert r.status_code == 200, r.text
    out: str = r.json()["fingerprint"]
    return out


def status(shop: Shop, token: str) -> dict[tuple[str, str], dict[str, Any]]:
    r = shop.client.post(f"{BASE}/{ENV}/deploys/status", json={"manifest": MANIFEST}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return {(h["host"], h["role"]): h for h in r.json()["hosts"]}


def test_full_lifecycle_and_ledger(shop: Shop) -> None:
    token = deployer(shop)
    r = shop.start(token, version="v1", ttl_seconds=600)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    started = r.json()
    deploy = started["deploy"]
    assert deploy["status"] == "running" and deploy["kind"] == "deploy" and deploy["via"] == "ssh"
    assert deploy["by"] == "deployer" and deploy["service"] == "shop" and deploy["version"] == "v1"
    assert started["uses"] == 4 + 2 * 3
    assert started["keys"] == [{"environment": ENV, "name": n} for n in PLAN_KEYS]  # OUTSIDE_PLAN is not one
    plan = started["plan"]
    assert plan["image"] == "registry.example.com/acme/shop" and plan["version"] == "v1"
    assert plan["registry"] == {"server": "registry.example.com", "username": "deployer"}
    assert plan["builder"]["secrets"] == ["BUILD_TOKEN"] and plan["builder"]["args"] == {
        "RUBY_VERSION": "3.3"
    }
    assert [(r["name"], [h["host"] for h in r["hosts"]]) for r in plan["roles"]] == [
        ("web", ["web1", "web2"]),
        ("job", ["job1"]),
    ]
    assert plan["roles"][0]["options"] == {"network": "host"} and plan["roles"][1]["cmd"] == "bin/jobs"
    assert plan["roles"][0]["hosts"][1]["tags"] == ["eu"]
    assert plan["healthcheck"] == {"path": "/up", "port": 3000, "cmd": None, "interval": 1, "timeout": 5}
    assert (plan["retain_images"], plan["stop_timeout"]) == (3, 7)
    assert plan["readiness_delay"] == 7  # not set: Kamal's default
    assert plan["ssh"] == {"user": None, "port": None, "host_keys": {}}  # not set: ssh decides
    info = shop.client.get("/v1/auth/token/self", headers=bearer(started["token"]))
    assert info.status_code == 200
    assert info.json()["scopes"] == [
        {"project": PROJECT, "environments": ENV, "actions": ["read"], "deny": False, "keys": PLAN_KEYS}
    ]
    assert info.json()["num_uses"] == started["uses"]

    dt = started["token"]
    did = deploy["id"]
    r = shop.call("POST", f"/v1/deploys/{did}/bundle", dt)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    bundle = r.json()
    v = shop.values
    files = {(h["host"], h["role"]): h for h in bundle["hosts"]}
    assert list(files) == [("web1", "web"), ("web2", "web"), ("job1", "job")]
    common = {
        "RAILS_ENV": "production",
        "DATABASE_URL": f"postgres://app:{v['DB_PASSWORD']}@db/app",
        "SECRET_KEY_BASE": v["SECRET_KEY_BASE"],
    }
    assert env_lines(files[("web1", "web")]["env_file"]) == common
    assert env_lines(files[("web2", "web")]["env_file"]) == {**common, "REGION": "eu", "EU_KEY": v["EU_KEY"]}
    assert env_lines(files[("job1", "job")]["env_file"]) == {**common, "JOB_KEY": v["JOB_KEY"]}
    for item in files.values():
        assert item["env_fingerprint"] == fingerprint(shop, item["env_file"])
    assert bundle["registry_password"] == v["REGISTRY_PASSWORD"]
    assert bundle["build_secrets"] == {"BUILD_TOKEN": v["BUILD_TOKEN"]}
    assert [(k["name"], k["version"]) for k in bundle["keys"]] == [(n, 1) for n in PLAN_KEYS]
    assert all(k["fingerprint"] == fingerprint(shop, v[k["name"]]) for k in bundle["keys"])

    for (host, role), item in files.items():
        r = shop.call(
            "POST",
            f"/v1/deploys/{did}/hosts",
            dt,
            {
                "host": host,
                "role": role,
                "outcome": "deployed",
                "container": f"shop-{role}-v1",
                "image_digest": "sha256:" + "a" * 64,
                "env_fingerprint": item["env_fingerprint"],
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["host"] == host and r.json()["outcome"] == "deployed"
    r = shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": "succeeded"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["finished_at"] is not None
    # Dead after finish, on every route and on plain reads.
    shop.broker.expect_denied(shop.call("POST", f"/v1/deploys/{did}/bundle", dt), 401)
    shop.broker.expect_denied(shop.call("GET", f"{BASE}/{ENV}/secrets/SECRET_KEY_BASE", dt), 401)
    shop.broker.expect_denied(shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": "failed"}), 401)

    r = shop.client.get(f"/v1/deploys/{did}", headers=bearer(token))
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["status"] == "succeeded" and len(detail["hosts"]) == 3
    assert detail["keys"] == bundle["keys"]
    # Per host: the keys of its own env file (no registry or build secret), as served.
    served = {k["name"]: k for k in bundle["keys"]}
    assert detail["host_keys"] == [
        {"host": host, "role": role, **served[name]}
        for host, role, names in (
            ("web1", "web", ["DB_PASSWORD", "SECRET_KEY_BASE"]),
            ("web2", "web", ["DB_PASSWORD", "EU_KEY", "SECRET_KEY_BASE"]),
            ("job1", "job", ["DB_PASSWORD", "JOB_KEY", "SECRET_KEY_BASE"]),
        )
        for name in names
    ]
    shop.broker.clock.advance(1)
    second = shop.started(token, version="v2", kind="rollback", hosts=["web1"])
    listed = shop.client.get(f"{BASE}/{ENV}/deploys?limit=20", headers=bearer(token)).json()["deploys"]
    assert [d["id"] for d in listed] == [second["deploy"]["id"], did]
    assert "hosts" not in listed[0]
    assert second["uses"] == 4 + 2 and [r["name"] for r in second["plan"]["roles"]] == ["web"]

    # Status: no drift, then a rotated secret shows on the hosts that use it.
    now = status(shop, token)
    for key, item in files.items():
        assert now[key]["last"]["deploy"] == did and now[key]["last"]["version"] == "v1"
        assert now[key]["last"]["by"] == "deployer" and now[key]["last"]["outcome"] == "deployed"
        assert (
            now[key]["expected_env_fingerprint"]
            == item["env_fingerprint"]
            == now[key]["last"]["env_fingerprint"]
        )
        assert now[key]["rotated"] == []
    shop.put(ENV, "EU_KEY", shop.canary + "-rotated")
    now = status(shop, token)
    assert now[("web2", "web")]["rotated"] == [
        {"name": "EU_KEY", "deployed_version": 1, "current_version": 2}
    ]
    assert now[("web2", "web")]["expected_env_fingerprint"] != files[("web2", "web")]["env_fingerprint"]
    assert now[("web1", "web")]["rotated"] == [] and now[("job1", "job")]["rotated"] == []


def _deploy_every_host(shop: Shop, token: str) -> dict[tuple[str, str], str]:
    """Start, fetch the bundle, report every host deployed and finish; the env fingerprint of each pair."""
    started = shop.started(token)
    dt, did = started["token"], started["deploy"]["id"]
    r = shop.call("POST", f"/v1/deploys/{did}/bundle", dt)
    assert r.status_code == 200, r.text
    files = {(h["host"], h["role"]): h["env_fingerprint"] for h in r.json()["hosts"]}
    for (host, role), env_fingerprint in files.items():
        body = {"host": host, "role": role, "outcome": "deployed", "env_fingerprint": env_fingerprint}
        assert shop.call("POST", f"/v1/deploys/{did}/hosts", dt, body).status_code == 201
    assert shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": "succeeded"}).status_code == 200
    return files


def test_status_compares_each_host_with_the_keys_its_own_env_file_got(shop: Shop) -> None:
    """A manifest edited since the deploy changes neither which keys a host got nor their rotation."""
    token = deployer(shop)
    files = _deploy_every_host(shop, token)
    shop.put(ENV, "EU_KEY", shop.canary + "-rotated")  # only web2 (tag eu) got it
    shop.put(ENV, "JOB_KEY", shop.canary + "-rotated")  # only job1 got it
    # Today's manifest gives web1 the eu tag (so EU_KEY) and no longer gives job1 JOB_KEY.
    today = MANIFEST.replace("      - web1\n", "      - host: web1\n        tags: [eu]\n")
    today = today.replace("    env:\n      secret: [JOB_KEY]\n", "")
    assert today.count("tags: [eu]") == 2 and "JOB_KEY" not in today
    r = shop.client.post(f"{BASE}/{ENV}/deploys/status", json={"manifest": today}, headers=bearer(token))
    assert r.status_code == 200, r.text
    now = {(h["host"], h["role"]): h for h in r.json()["hosts"]}
    assert now[("web1", "web")]["rotated"] == []  # web1 never received EU_KEY: not a rotation
    assert now[("web1", "web")]["expected_env_fingerprint"] != files[("web1", "web")]  # but it drifted
    assert now[("web2", "web")]["rotated"] == [
        {"name": "EU_KEY", "deployed_version": 1, "current_version": 2}
    ]
    assert now[("job1", "job")]["rotated"] == [
        {"name": "JOB_KEY", "deployed_version": 1, "current_version": 2}
    ]
    assert shop.canary not in r.text


def test_plan_ssh_carries_only_what_the_manifest_sets(shop: Shop) -> None:
    pinned = "SHA256:" + "A" * 43
    manifest = MANIFEST + f"ssh:\n  port: 2222\n  host_keys:\n    web1: [{pinned}]\n"
    ssh = shop.started(deployer(shop), manifest=manifest)["plan"]["ssh"]
    assert ssh == {"user": None, "port": 2222, "host_keys": {"web1": [pinned]}}


def test_plan_carries_the_readiness_delay_and_refuses_one_out_of_range(shop: Shop) -> None:
    token = deployer(shop)
    for delay in (0, 600):
        manifest = MANIFEST + f"  readiness_delay: {delay}\n"  # under `deploy:`, the manifest's last section
        assert shop.started(token, manifest=manifest)["plan"]["readiness_delay"] == delay
    before = shop.broker.dump()
    for bad in ("601", "-1", "soon"):
        r = shop.start(token, manifest=MANIFEST + f"  readiness_delay: {bad}\n")
        assert r.status_code == 400, r.text
        assert "deploy/readiness_delay: must be" in r.json()["detail"], r.text
    after = shop.broker.dump()
    for table in LEDGER:
        assert after[table] == before[table], table


def test_deploy_token_reads_only_plan_keys(shop: Shop) -> None:
    started = shop.started(deployer(shop))
    dt = started["token"]
    b = shop.broker
    r = shop.call("GET", f"{BASE}/{ENV}/secrets/SECRET_KEY_BASE", dt)
    assert r.status_code == 200 and r.json()["value"] == shop.values["SECRET_KEY_BASE"]
    r = shop.call("POST", f"{BASE}/{ENV}/values", dt, {"names": ["JOB_KEY"]})
    assert r.status_code == 200 and r.json()["values"]["JOB_KEY"]["value"] == shop.values["JOB_KEY"]
    refused = [
        shop.call("GET", f"{BASE}/{ENV}/secrets/OUTSIDE_PLAN", dt),
        shop.call("POST", f"{BASE}/{ENV}/values", dt, {"names": ["JOB_KEY", "OUTSIDE_PLAN"]}),
        shop.call("GET", f"{BASE}/{ENV}/resolved", dt),
        shop.call("GET", f"{BASE}/{ENV}/secrets", dt),
        shop.call("POST", f"{BASE}/{ENV}/compile", dt, {"manifest": MANIFEST, "targets": ["env-file"]}),
        shop.call("PUT", f"{BASE}/{ENV}/secrets/SECRET_KEY_BASE", dt, {"value": "x"}),
        shop.call("GET", f"{BASE}/common/secrets/DB_PASSWORD", dt),
    ]
    dt = shop.started(deployer(shop))["token"]  # a fresh one: the first has used its 10 uses
    refused += [
        shop.call("POST", f"{BASE}/{ENV}/deploys", dt, {"manifest": MANIFEST, "version": "v9"}),
        shop.call("POST", "/v1/tokens", dt, {}),
        shop.call("GET", f"{BASE}/{ENV}/deploys", dt),
    ]
    for r in refused:
        b.expect_denied(r, 403)
        assert shop.canary not in r.text
    assert "OUTSIDE_PLAN" in refused[0].json()["detail"]


def test_deploy_token_cannot_touch_another_deploy(shop: Shop) -> None:
    token = deployer(shop)
    a = shop.started(token)
    other = shop.started(token)
    before = shop.broker.dump()
    for path, body in (
        ("bundle", None),
        ("hosts", {"host": "web1", "role": "web", "outcome": "failed"}),
        ("finish", {"outcome": "failed"}),
    ):
        r = shop.call("POST", f"/v1/deploys/{other['deploy']['id']}/{path}", a["token"], body)
        shop.broker.expect_denied(r, 403)
        assert shop.canary not in r.text
        # The caller's own (ordinary) token is not a deploy token either.
        shop.broker.expect_denied(
            shop.call("POST", f"/v1/deploys/{a['deploy']['id']}/{path}", token, body), 403
        )
    after = shop.broker.dump()
    for table in LEDGER:
        assert after[table] == before[table]
    # A missing deploy looks the same as one the caller may not see, unless it could read every deploy.
    missing = "/v1/deploys/00000000-0000-4000-8000-000000000000"
    shop.broker.expect_denied(shop.call("GET", missing, token), 403)
    assert shop.call("GET", missing, shop.broker.admin.token).status_code == 404
    stranger = shop.broker.login([scope("elsewhere", ["read"])], name="stranger").token
    shop.broker.expect_denied(shop.call("GET", f"/v1/deploys/{a['deploy']['id']}", stranger), 403)


def test_use_limit(shop: Shop) -> None:
    started = shop.started(deployer(shop), hosts=["web2"])
    assert started["uses"] == 6
    dt, did = started["token"], started["deploy"]["id"]
    for _ in range(5):
        assert shop.call("POST", f"/v1/deploys/{did}/bundle", dt).status_code == 200
    assert shop.call("GET", f"{BASE}/{ENV}/secrets/EU_KEY", dt).status_code == 200
    shop.broker.expect_denied(shop.call("POST", f"/v1/deploys/{did}/bundle", dt), 401)
    shop.broker.expect_denied(shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": "failed"}), 401)
    # Never finished, and its token can no longer finish it: the ledger says so.
    r = shop.client.get(f"/v1/deploys/{did}", headers=shop.broker.admin.headers)
    assert r.json()["status"] == "abandoned" and r.json()["finished_at"] is None


def test_ttl_never_beyond_the_parent(shop: Shop) -> None:
    parent = shop.broker.login([scope(PROJECT, ["read"])], name="short", token_ttl=300, token_max_ttl=300)
    started = shop.started(parent.token, ttl_seconds=3600)
    parent_expiry = _at(shop.client.get("/v1/auth/token/self", headers=parent.headers).json()["expires_at"])
    assert _at(started["expires_at"]) <= parent_expiry
    own = shop.started(deployer(shop), ttl_seconds=120)
    listed = shop.client.get(f"{BASE}/{ENV}/deploys", headers=shop.broker.admin.headers).json()["deploys"]
    assert {d["status"] for d in listed} == {"running"}
    shop.broker.clock.advance(121)
    shop.broker.expect_denied(
        shop.call("POST", f"/v1/deploys/{own['deploy']['id']}/bundle", own["token"]), 401
    )
    listed = shop.client.get(f"{BASE}/{ENV}/deploys", headers=shop.broker.admin.headers).json()["deploys"]
    status = {d["id"]: d["status"] for d in listed}
    assert status == {own["deploy"]["id"]: "abandoned", started["deploy"]["id"]: "running"}
    shop.broker.clock.advance(200)
    shop.broker.expect_denied(
        shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/bundle", started["token"]), 401
    )
    # A use-limited caller cannot mint a deploy token (it would outlive the caller's uses).
    limited = shop.broker.child_token(shop.broker.admin.token, num_uses=5)
    shop.broker.expect_denied(shop.start(limited["token"]), 403)


BAD_STARTS: list[tuple[dict[str, Any], str]] = [
    ({"ttl_seconds": 59}, "ttl_seconds"),
    ({"ttl_seconds": 3601}, "ttl_seconds"),
    ({"version": "bad tag"}, "version"),
    ({"version": ""}, "version"),
    ({"kind": "redeploy"}, "kind"),
    ({"via": "ftp"}, "via"),
    ({"hosts": []}, "hosts"),
    ({"hosts": ["web9"]}, "hosts[0]"),
    ({"unknown": 1}, "unknown"),
    ({"manifest": MANIFEST.replace("image: registry.example.com/acme/shop\n", "")}, "image"),
    ({"manifest": MANIFEST + "surprise: 1\n"}, "strongroom.yml is invalid: surprise"),
    ({"manifest": MANIFEST.replace("[SECRET_KEY_BASE]", "[SECRET_KEY_BASE, NOT_STORED]")}, "manifest"),
    ({"manifest": MANIFEST.replace("project: shop", "project: other")}, "project"),
]


def test_bad_bodies_name_the_field_and_store_nothing(shop: Shop) -> None:
    token = deployer(shop)
    before = shop.broker.dump()
    for change, field in BAD_STARTS:
        r = shop.start(token, **change)
        assert r.status_code == 400, (change, r.status_code, r.text)
        assert r.json()["detail"].startswith(field), (change, r.json()["detail"])
        assert shop.canary not in r.text
    after = shop.broker.dump()
    for table in LEDGER:
        assert after[table] == before[table], table
    assert len(after["tokens"]) == len(before["tokens"])
    started = shop.started(token)
    dt, did = started["token"], started["deploy"]["id"]
    before = shop.broker.dump()
    for path, body, field in (
        ("hosts", {"host": "web1", "role": "web", "outcome": "maybe"}, "outcome"),
        ("hosts", {"host": "web1", "role": "web"}, "outcome"),
        ("hosts", {"host": "web1", "role": "web", "outcome": "failed", "error": "x" * 2001}, "error"),
        ("hosts", {"host": "web1", "role": "job", "outcome": "deployed"}, "host"),
        ("hosts", {"host": "db9", "role": "web", "outcome": "deployed"}, "host"),
        (
            "hosts",
            {"host": "web1", "role": "web", "outcome": "deployed", "env_fingerprint": "sha1:x"},
            "env_fingerprint",
        ),
        ("hosts", {"host": "web1", "role": "web", "outcome": "deployed", "extra": True}, "extra"),
        ("finish", {"outcome": "done"}, "outcome"),
        ("finish", {}, "outcome"),
    ):
        r = shop.call("POST", f"/v1/deploys/{did}/{path}", dt, body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["detail"].startswith(field), (body, r.json()["detail"])
    after = shop.broker.dump()
    for table in LEDGER:
        assert after[table] == before[table], table


def test_first_unreadable_key_is_named(shop: Shop) -> None:
    only_prod = shop.broker.login([scope(PROJECT, ["read"], ENV)], name="prod-only").token
    manifest = MANIFEST.replace(
        "RAILS_ENV: production", "RAILS_ENV: production\n    SHARED: ${common.DB_PASSWORD}"
    )
    before = shop.broker.dump()
    r = shop.start(only_prod, manifest=manifest)
    shop.broker.expect_denied(r, 403)
    assert "shop/common/DB_PASSWORD" in r.json()["detail"]
    assert shop.broker.dump()["deploys"] == before["deploys"]
    # With read there too, the token gets a second scope for the other environment.
    started = shop.started(deployer(shop), manifest=manifest)
    assert {"environment": "common", "name": "DB_PASSWORD"} in started["keys"]
    scopes = shop.client.get("/v1/auth/token/self", headers=bearer(started["token"])).json()["scopes"]
    assert [(s["environments"], s["keys"]) for s in scopes] == [(ENV, PLAN_KEYS), ("common", ["DB_PASSWORD"])]
    bundle = shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/bundle", started["token"]).json()
    assert env_lines(bundle["hosts"][0]["env_file"])["SHARED"] == shop.values["DB_PASSWORD"]


def test_a_value_the_env_file_cannot_carry_names_key_and_host(shop: Shop) -> None:
    shop.put(ENV, "EU_KEY", f"{shop.canary}\nsecond line")
    started = shop.started(deployer(shop))
    r = shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/bundle", started["token"])
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("hosts/web2 (role web): EU_KEY") and shop.canary not in r.text
    assert shop.broker.dump()["deploy_keys"] == [] == shop.broker.dump()["deploy_host_keys"]


def test_no_value_in_audit_errors_or_logs(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses: list[httpx.Response] = []
    token = deployer(shop)
    started = shop.started(token)
    dt, did = started["token"], started["deploy"]["id"]
    responses.append(shop.call("GET", f"{BASE}/{ENV}/secrets/OUTSIDE_PLAN", dt))
    responses.append(shop.call("POST", f"/v1/deploys/{did}/hosts", dt, {"host": "nope!", "role": "web"}))
    bundle = shop.call("POST", f"/v1/deploys/{did}/bundle", dt)
    assert bundle.status_code == 200
    responses.append(
        shop.call(
            "POST",
            f"/v1/deploys/{did}/hosts",
            dt,
            {"host": "web1", "role": "web", "outcome": "failed", "error": "container exited (code 1)"},
        )
    )
    responses.append(shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": "failed"}))
    responses.append(shop.client.get(f"/v1/deploys/{did}", headers=bearer(token)))
    responses.append(
        shop.client.post(f"{BASE}/{ENV}/deploys/status", json={"manifest": MANIFEST}, headers=bearer(token))
    )
    responses.append(shop.start(token, manifest=MANIFEST + "bad: [\n"))
    for r in responses:
        assert shop.canary not in r.text, r.request.url
    rows = shop.broker.audit_rows()
    actions = {row["action"] for row in rows}
    assert {
        "deploy.create",
        "deploy.bundle",
        "deploy.host",
        "deploy.finish",
        "deploy.read",
        "deploy.status",
    } <= actions
    bundle_events = [row for row in rows if row["action"] == "deploy.bundle"]
    assert len(bundle_events) == 1 and bundle_events[0]["outcome"] == "ok"
    served = json.loads(bundle_events[0]["fingerprints"])
    assert len(served) == len(PLAN_KEYS) and all("hmac-sha256:" in json.dumps(item) for item in served)
    for row in rows:
        assert shop.canary not in json.dumps(row, default=str), row["action"]
    assert shop.canary not in caplog.text


def test_a_host_error_holding_a_value_is_redacted_in_the_ledger(shop: Shop) -> None:
    started = shop.started(deployer(shop))
    did = started["deploy"]["id"]
    error = (
        f"container exited: SECRET_KEY_BASE={shop.values['SECRET_KEY_BASE']} (and {shop.values['JOB_KEY']})"
    )
    body = {"host": "web1", "role": "web", "outcome": "failed", "error": error}
    r = shop.call("POST", f"/v1/deploys/{did}/hosts", started["token"], body)
    assert r.status_code == 201, r.text
    assert r.json()["error"] == "container exited: SECRET_KEY_BASE=[REDACTED] (and [REDACTED])"
    assert shop.canary not in json.dumps(shop.broker.dump()["deploy_hosts"], default=str)


def test_deploy_routes_are_audited_with_project_and_environment(shop: Shop) -> None:
    started = shop.started(deployer(shop))
    r = shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/bundle", started["token"])
    event = shop.broker.audit_of(r)
    assert (event["project"], event["environment"], event["outcome"]) == (PROJECT, ENV, "ok")
    assert event["token_accessor"] == started["accessor"]


# A Kamal deploy also fetches proxy/ssl's PEMs and the accessories' secrets: `.kamal/secrets.<env>` names
# every secret of the manifest. It does not read DB_PASSWORD, which only the clear DATABASE_URL uses (Kamal
# compiles clear values into config/deploy.yml with the caller's token).
KAMAL_MANIFEST = (
    MANIFEST
    + "proxy:\n  host: shop.example.com\n  ssl:\n    certificate_pem: TLS_CERT\n    private_key_pem: TLS_KEY\n"
    + "accessories:\n  db:\n    image: postgres:16\n    host: db1\n    env:\n      secret: [POSTGRES_PASSWORD]\n"
)  # fmt: skip
KAMAL_KEYS = sorted({*PLAN_KEYS, "TLS_CERT", "TLS_KEY", "POSTGRES_PASSWORD"} - {"DB_PASSWORD"})


def _kamal_shop(shop: Shop) -> None:
    for name in ("TLS_CERT", "TLS_KEY", "POSTGRES_PASSWORD"):
        shop.values[name] = f"{shop.canary}-{name}"
        shop.put(ENV, name, shop.values[name])


def test_a_kamal_deploy_token_reads_exactly_what_the_kamal_files_fetch(shop: Shop) -> None:
    """`via: kamal` scopes the token to every secret name `.kamal/secrets.<env>` fetches, and only those."""
    from broker.compiler.parse import parse_manifest

    _kamal_shop(shop)
    body = parse_manifest(KAMAL_MANIFEST).for_environment(ENV)
    assert body.secret_names() == KAMAL_KEYS  # the fetch line of the compiled Kamal files, by construction
    started = shop.started(deployer(shop), manifest=KAMAL_MANIFEST, via="kamal")
    assert started["deploy"]["via"] == "kamal"
    assert started["keys"] == [{"environment": ENV, "name": n} for n in KAMAL_KEYS]
    dt = started["token"]
    r = shop.call("POST", f"{BASE}/{ENV}/values", dt, {"names": KAMAL_KEYS})
    assert r.status_code == 200, r.text
    assert {n: v["value"] for n, v in r.json()["values"].items()} == {n: shop.values[n] for n in KAMAL_KEYS}
    refused = [
        shop.call("GET", f"{BASE}/{ENV}/secrets/OUTSIDE_PLAN", dt),
        shop.call("GET", f"{BASE}/{ENV}/secrets/DB_PASSWORD", dt),
        shop.call("GET", f"{BASE}/common/secrets/DB_PASSWORD", dt),
    ]
    for r in refused:
        shop.broker.expect_denied(r, 403)
        assert shop.canary not in r.text
    # The bundle serves the same keys; each host's env file holds only the secrets Kamal fetches for it.
    r = shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/bundle", dt)
    assert r.status_code == 200, r.text
    assert [k["name"] for k in r.json()["keys"]] == KAMAL_KEYS
    files = {(h["host"], h["role"]): env_lines(h["env_file"]) for h in r.json()["hosts"]}
    v = shop.values
    web2 = {
        "RAILS_ENV": "production",
        "REGION": "eu",
        "EU_KEY": v["EU_KEY"],
        "SECRET_KEY_BASE": v["SECRET_KEY_BASE"],
    }
    assert files[("web2", "web")] == web2  # no DATABASE_URL: it is built from DB_PASSWORD
    r = shop.call("POST", f"/v1/deploys/{started['deploy']['id']}/finish", dt, {"outcome": "succeeded"})
    assert r.status_code == 200, r.text


def test_a_native_deploy_token_of_the_same_manifest_cannot_read_the_kamal_only_keys(shop: Shop) -> None:
    """Without `via: kamal` the PEMs and the accessories' secrets stay out of the token (Strongroom's driver uses neither)."""
    _kamal_shop(shop)
    started = shop.started(deployer(shop), manifest=KAMAL_MANIFEST)
    assert started["deploy"]["via"] == "ssh"
    assert [k["name"] for k in started["keys"]] == PLAN_KEYS
    for name in ("TLS_CERT", "TLS_KEY", "POSTGRES_PASSWORD"):
        r = shop.call("GET", f"{BASE}/{ENV}/secrets/{name}", started["token"])
        shop.broker.expect_denied(r, 403)
        assert shop.canary not in r.text


def test_the_deploy_mode_is_in_the_audit_record(shop: Shop) -> None:
    """The mode that decided the token's keys is audited (a bad `via` is refused by name: BAD_STARTS)."""
    token = deployer(shop)
    _kamal_shop(shop)
    r = shop.start(token, manifest=KAMAL_MANIFEST, via="kamal")
    assert r.status_code == 201, r.text
    event = shop.broker.audit_of(r)
    assert event["action"] == "deploy.create"
    assert event["reason"] == f"via kamal: the deploy token reads {len(KAMAL_KEYS)} keys"


def _deploy(
    shop: Shop, token: str, version: str, outcomes: dict[str, str], **body: Any
) -> tuple[str, dict[tuple[str, str], str]]:
    """Start a deploy, fetch its bundle, report each (host) with its outcome and finish; id and fingerprints."""
    started = shop.started(token, version=version, **body)
    dt, did = started["token"], started["deploy"]["id"]
    r = shop.call("POST", f"/v1/deploys/{did}/bundle", dt)
    assert r.status_code == 200, r.text
    files = {(h["host"], h["role"]): h["env_fingerprint"] for h in r.json()["hosts"]}
    for (host, role), env_fingerprint in files.items():
        outcome = outcomes.get(host, "deployed")
        report: dict[str, Any] = {"host": host, "role": role, "outcome": outcome}
        if outcome == "deployed":
            report["env_fingerprint"] = env_fingerprint
        else:
            report["error"] = f"{host}: ssh: connect to host {host} port 22: Connection refused"
        assert shop.call("POST", f"/v1/deploys/{did}/hosts", dt, report).status_code == 201
    overall = "succeeded" if set(outcomes.values()) <= {"deployed"} else "partial"
    assert shop.call("POST", f"/v1/deploys/{did}/finish", dt, {"outcome": overall}).status_code == 200
    return did, files


def test_a_failed_host_gets_no_keys_and_status_shows_the_failed_attempt_until_a_deploy_reaches_it(
    shop: Shop,
) -> None:
    """Issue 17: the ledger records only what a host received and ran; status keeps the failure in view."""
    token = deployer(shop)
    first, _files = _deploy(shop, token, "v1", {})
    shop.broker.clock.advance(1)
    second, _files = _deploy(shop, token, "v2", {"web2": "failed"})
    detail = shop.client.get(f"/v1/deploys/{second}", headers=bearer(token)).json()
    assert {(h["host"], h["outcome"]) for h in detail["hosts"]} == {
        ("web1", "deployed"),
        ("web2", "failed"),
        ("job1", "deployed"),
    }
    assert {k["host"] for k in detail["host_keys"]} == {"web1", "job1"}  # web2 received nothing
    assert [k["name"] for k in detail["keys"]] == PLAN_KEYS  # what the deploy itself was served

    now = status(shop, token)
    web2 = now[("web2", "web")]
    assert (web2["last"]["deploy"], web2["last"]["version"]) == (first, "v1")
    assert web2["last_attempt"]["deploy"] == second and web2["last_attempt"]["outcome"] == "failed"
    assert "Connection refused" in web2["last_attempt"]["error"]
    assert (web2["behind"]["deploy"], web2["behind"]["version"]) == (second, "v2")
    web1 = now[("web1", "web")]
    assert web1["last"]["deploy"] == web1["last_attempt"]["deploy"] == second and web1["behind"] is None
    assert now[("job1", "job")]["behind"] is None  # another role: job1 is judged against job hosts only

    # The host comes back: a deploy of v2 to it alone brings it current.
    shop.broker.clock.advance(1)
    third, _files = _deploy(shop, token, "v2", {}, hosts=["web2"])
    web2 = status(shop, token)[("web2", "web")]
    assert web2["last"]["deploy"] == web2["last_attempt"]["deploy"] == third
    assert web2["last"]["version"] == "v2" and web2["behind"] is None and web2["rotated"] == []
    detail = shop.client.get(f"/v1/deploys/{third}", headers=bearer(token)).json()
    assert {k["host"] for k in detail["host_keys"]} == {"web2"}


def test_a_deploy_that_never_reports_a_host_shows_as_its_attempt_running_then_abandoned(shop: Shop) -> None:
    """A deploy whose CLI was stopped never reports the hosts it had not reached: status must not call
    them current. Nothing is written for them: the ledger keeps only what hosts reported."""
    token = deployer(shop)
    first, _files = _deploy(shop, token, "v1", {})
    shop.broker.clock.advance(1)
    started = shop.started(token, version="v2", ttl_seconds=120)
    dt, did = started["token"], started["deploy"]["id"]
    r = shop.call("POST", f"/v1/deploys/{did}/bundle", dt)
    assert r.status_code == 200, r.text
    web1 = next(h for h in r.json()["hosts"] if h["host"] == "web1")
    report = {
        "host": "web1",
        "role": "web",
        "outcome": "deployed",
        "env_fingerprint": web1["env_fingerprint"],
    }
    assert shop.call("POST", f"/v1/deploys/{did}/hosts", dt, report).status_code == 201
    ledger_before = shop.broker.dump()["deploy_hosts"]

    now = status(shop, token)
    assert now[("web1", "web")]["last_attempt"]["outcome"] == "deployed"  # it reported
    for pair in (("web2", "web"), ("job1", "job")):
        attempt = now[pair]["last_attempt"]
        assert (attempt["deploy"], attempt["version"], attempt["outcome"]) == (did, "v2", "running")
        assert attempt["error"] == "the deploy has not reported this host yet"
        assert now[pair]["last"]["deploy"] == first  # its last success is still the first deploy

    shop.broker.clock.advance(121)  # the deploy token is dead: nothing can finish the deploy any more
    now = status(shop, token)
    attempt = now[("web2", "web")]["last_attempt"]
    assert (attempt["deploy"], attempt["outcome"]) == (did, "abandoned")
    assert "abandoned without reporting this host" in attempt["error"]
    assert shop.broker.dump()["deploy_hosts"] == ledger_before  # status wrote nothing

    # A later deploy that reaches the hosts settles them; one limited to web2 leaves job1 abandoned.
    shop.broker.clock.advance(1)
    third, _files = _deploy(shop, token, "v2", {}, hosts=["web2"])
    now = status(shop, token)
    assert now[("web2", "web")]["last_attempt"]["deploy"] == third
    assert now[("job1", "job")]["last_attempt"]["outcome"] == "abandoned"
    shop.broker.clock.advance(1)
    _deploy(shop, token, "v2", {})
    assert {h["last_attempt"]["outcome"] for h in status(shop, token).values()} == {"deployed"}


def test_a_host_cannot_report_deployed_before_the_bundle(shop: Shop) -> None:
    token = deployer(shop)
    started = shop.started(token)
    dt, did = started["token"], started["deploy"]["id"]
    body = {
        "host": "web1",
        "role": "web",
        "outcome": "deployed",
        "env_fingerprint": "hmac-sha256:" + "0" * 64,
    }
    r = shop.call("POST", f"/v1/deploys/{did}/hosts", dt, body)
    assert r.status_code == 409, r.text
    assert "before the bundle was fetched" in r.json()["detail"]
    assert shop.broker.dump()["deploy_host_keys"] == [] == shop.broker.dump()["deploy_hosts"]
