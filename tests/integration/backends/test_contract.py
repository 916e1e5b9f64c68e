"""The backend contract: the same API behaviour whether a secret lives in the database, in Vault KV v2
(OpenBao; a real HashiCorp Vault when opted in) or in AWS Secrets Manager (moto; per-key or JSON layout).

Differences a backend cannot hide are capabilities (`World.caps`): AWS cannot destroy one version, and
the JSON layout cannot undelete. Proxied values also say where they came from.
"""

from __future__ import annotations

import secrets

import pytest

from tests.integration.backends.conftest import World


def rv() -> str:
    return "v-" + secrets.token_hex(12)


def check_origin(w: World, body: dict[str, object]) -> None:
    if w.kind == "database":
        assert "backend" not in body and "upstream_path" not in body
        return
    assert body["backend"] in ("vault", "aws")
    assert w.prefix in str(body["upstream_path"])
    assert body["upstream_version"]


def test_write_then_read_says_where_it_came_from(world: World) -> None:
    value = rv()
    r = world.put("DB_URL", value)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["version"] == 1 and meta["deleted"] is False
    check_origin(world, meta)
    r = world.get("DB_URL")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (body["name"], body["value"], body["version"], body["environment"]) == (
        "DB_URL",
        value,
        1,
        "production",
    )
    check_origin(world, body)


def test_check_and_set(world: World) -> None:
    first, second = rv(), rv()
    assert world.put("API_KEY", first, cas=0).status_code == 200
    r = world.put("API_KEY", rv(), cas=0)
    assert r.status_code == 409, r.text
    assert first not in r.text
    assert world.put("API_KEY", second, cas=1).status_code == 200
    r = world.put("API_KEY", rv(), cas=1)
    assert r.status_code == 409, r.text
    r = world.put("MISSING", rv(), cas=3)
    assert r.status_code == 409, r.text
    got = world.get("API_KEY").json()
    assert (got["value"], got["version"]) == (second, 2)


def test_versions_are_kept_and_readable(world: World) -> None:
    values = [rv() for _ in range(3)]
    for v in values:
        assert world.put("TOKEN", v).status_code == 200
    for i, v in enumerate(values, start=1):
        r = world.get("TOKEN", version=i)
        assert r.status_code == 200, r.text
        assert (r.json()["value"], r.json()["version"]) == (v, i)
    assert world.get("TOKEN", version=9).status_code == 404
    r = world.client.get(f"{world.url('TOKEN')}/versions", headers=world.h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["current_version"] == 3
    assert [v["version"] for v in body["versions"]][:3] == [3, 2, 1]


def test_unknown_secret_is_404(world: World) -> None:
    r = world.get("NOPE")
    assert r.status_code == 404, r.text
    assert r.json()["status"] == 404


def test_list_never_shows_values(world: World) -> None:
    a, b = rv(), rv()
    assert world.put("A_ONE", a).status_code == 200
    assert world.put("B_TWO", b).status_code == 200
    r = world.client.get(world.url(), headers=world.h)
    assert r.status_code == 200, r.text
    items = r.json()["secrets"]
    assert [i["name"] for i in items] == ["A_ONE", "B_TWO"]
    assert all(i["deleted"] is False for i in items)
    # The JSON layout keeps many keys in one AWS secret: a key's version is that secret's version.
    assert [i["version"] for i in items] == ([2, 2] if world.kind == "aws-json" else [1, 1])
    assert a not in r.text and b not in r.text


def test_soft_delete_and_undelete(world: World) -> None:
    value = rv()
    assert world.put("GONE", value).status_code == 200
    assert world.put("STAYS", rv()).status_code == 200
    r = world.client.delete(world.url("GONE"), headers=world.h)
    assert r.status_code == 204, r.text
    r = world.get("GONE")
    assert r.status_code == 404, r.text
    assert value not in r.text
    assert world.client.delete(world.url("GONE"), headers=world.h).status_code == 404
    names = [i["name"] for i in world.client.get(world.url(), headers=world.h).json()["secrets"]]
    assert names == ["STAYS"]
    assert "GONE" not in world.resolved()
    if "undelete" not in world.caps:
        r = world.client.post(f"{world.url('GONE')}/undelete", headers=world.h)
        assert r.status_code == 400, r.text
        return
    listed = world.client.get(world.url(), params={"include_deleted": "true"}, headers=world.h).json()[
        "secrets"
    ]
    assert {i["name"]: i["deleted"] for i in listed} == {"GONE": True, "STAYS": False}
    r = world.client.post(f"{world.url('GONE')}/undelete", headers=world.h)
    assert r.status_code == 200, r.text
    assert world.get("GONE").json()["value"] == value
    assert world.client.post(f"{world.url('GONE')}/undelete", headers=world.h).status_code == 409


def test_destroy_erases_one_version(world: World) -> None:
    old, new = rv(), rv()
    assert world.put("ROTATED", old).status_code == 200
    assert world.put("ROTATED", new).status_code == 200
    r = world.client.post(f"{world.url('ROTATED')}/versions/1/destroy", headers=world.h)
    if "destroy" not in world.caps:
        assert r.status_code == 400, r.text
        assert world.get("ROTATED", version=1).json()["value"] == old
        return
    assert r.status_code == 204, r.text
    r = world.get("ROTATED", version=1)
    assert r.status_code == 404 and old not in r.text
    assert world.get("ROTATED").json()["value"] == new
    versions = world.client.get(f"{world.url('ROTATED')}/versions", headers=world.h).json()["versions"]
    assert {v["version"]: v["destroyed"] for v in versions} == {2: False, 1: True}


def test_rollback_writes_a_new_version_with_the_old_value(world: World) -> None:
    old, new = rv(), rv()
    assert world.put("FLAG", old).status_code == 200
    assert world.put("FLAG", new).status_code == 200
    r = world.client.post(f"{world.url('FLAG')}/rollback", json={"version": 1}, headers=world.h)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3
    got = world.get("FLAG").json()
    assert (got["value"], got["version"]) == (old, 3)


def test_resolve_mixes_database_and_upstream_nearest_wins(world: World) -> None:
    common_only, common_shadowed, prod = rv(), rv(), rv()
    assert world.put("LOG_LEVEL", common_only, env="common").status_code == 200
    assert world.put("DB_URL", common_shadowed, env="common").status_code == 200
    assert world.put("DB_URL", prod).status_code == 200
    values = world.resolved()
    assert values["LOG_LEVEL"]["value"] == common_only
    assert values["LOG_LEVEL"]["environment"] == "common"
    assert "backend" not in values["LOG_LEVEL"]
    assert values["DB_URL"]["value"] == prod
    assert values["DB_URL"]["environment"] == "production"
    check_origin(world, values["DB_URL"])
    staging = world.resolved("staging")
    assert staging["DB_URL"]["value"] == common_shadowed


def test_resolve_audits_each_value_once_where_it_came_from(world: World) -> None:
    """One event for the whole environment: each value's keyed fingerprint, its environment and version."""
    import json

    from sqlalchemy import select

    from broker.audit.fingerprint import fingerprint
    from broker.models import audit_events

    common_only, common_shadowed, prod = rv(), rv(), rv()
    assert world.put("LOG_LEVEL", common_only, env="common").status_code == 200
    assert world.put("DB_URL", common_shadowed, env="common").status_code == 200
    assert world.put("DB_URL", prod).status_code == 200
    r = world.client.get("/v1/projects/microblog/environments/production/resolved", headers=world.h)
    assert r.status_code == 200, r.text
    body = r.json()["values"]

    async def events(rid: str) -> list[dict[str, object]]:
        async with world.rt.engine.begin() as conn:
            rows = await conn.execute(select(audit_events).where(audit_events.c.request_id == rid))
            return [dict(row._mapping) for row in rows]

    (event,) = world.client.portal.call(events, r.headers["x-request-id"])  # type: ignore[union-attr]
    assert event["action"] == "secret.resolve" and event["outcome"] == "ok"
    for value in (common_only, common_shadowed, prod):
        assert value not in json_text(event)
    seen = json.loads(str(event["fingerprints"]))
    key = world.rt.keys.audit_key
    assert sorted((s["name"], s["environment"], s["version"], s["fingerprint"]) for s in seen) == [
        ("DB_URL", "production", body["DB_URL"]["version"], fingerprint(key, prod)),
        ("LOG_LEVEL", "common", 1, fingerprint(key, common_only)),
    ]


def test_write_refuses_bad_input_before_any_upstream_call(world: World) -> None:
    assert world.put("bad-name", rv()).status_code == 400
    assert world.put("OK", "x" * 70000).status_code == 400
    assert world.put("OK", rv(), cas=-1).status_code == 400


def test_upstream_version_pin(world: World) -> None:
    first, second = rv(), rv()
    assert world.put("PINNED", first).status_code == 200
    r2 = world.put("PINNED", second)
    if world.kind == "database":
        assert world.get("PINNED", upstream_version="1").status_code == 400
        return
    v1 = world.get("PINNED", version=1).json()["upstream_version"]
    r = world.get("PINNED", upstream_version=v1)
    assert r.status_code == 200, r.text
    assert r.json()["value"] == first
    if world.kind.startswith("aws"):
        assert world.get("PINNED", upstream_version="AWSPREVIOUS").json()["value"] == first
        assert world.get("PINNED", upstream_version="AWSCURRENT").json()["value"] == second
        assert r2.json()["upstream_version"] == world.get("PINNED").json()["upstream_version"]
    assert world.get("PINNED", upstream_version="no such version").status_code in (400, 404)


@pytest.mark.parametrize("name", ["A", "_X9"])
def test_names_pass_through_unchanged(world: World, name: str) -> None:
    value = rv()
    assert world.put(name, value).status_code == 200
    assert world.get(name).json()["value"] == value


def test_audit_events_say_where_each_value_came_from(world: World) -> None:
    from sqlalchemy import select

    from broker.models import audit_events

    value = rv()
    assert world.put("AUDITED", value).status_code == 200
    r = world.get("AUDITED")
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]
    assert world.get("ABSENT").status_code == 404
    failed_id = world.get("ABSENT").headers["x-request-id"]

    async def events(rid: str) -> list[dict[str, object]]:
        async with world.rt.engine.begin() as conn:
            rows = await conn.execute(select(audit_events).where(audit_events.c.request_id == rid))
            return [dict(row._mapping) for row in rows]

    (event,) = world.client.portal.call(events, request_id)  # type: ignore[union-attr]
    assert event["action"] == "secret.read" and event["outcome"] == "ok" and event["version"] == 1
    assert value not in json_text(event)
    assert event["fingerprints"] and "hmac-sha256:" in str(event["fingerprints"])  # keyed, never the value
    if world.kind == "database":
        assert event["backend"] is None and event["upstream_path"] is None
    else:
        assert event["backend"] == r.json()["backend"]
        assert event["upstream_path"] == r.json()["upstream_path"]
        assert event["upstream_version"] == r.json()["upstream_version"]
    (failed,) = world.client.portal.call(events, failed_id)  # type: ignore[union-attr]
    assert failed["outcome"] != "ok"
    if world.kind != "database":
        assert failed["backend"] is not None  # a failed upstream read still names the backend


def json_text(event: dict[str, object]) -> str:
    return " ".join(str(v) for v in event.values())
