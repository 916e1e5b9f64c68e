"""Environment inheritance: resolution order, provenance, cycles and deletion rules."""

from __future__ import annotations

from sqlalchemy import event, select, update

from broker.domain.inheritance import MAX_DEPTH
from broker.models import environments
from broker.services import visible
from tests.integration.secrets.conftest import Api, problem, random_value


def resolved(api: Api, env: str) -> dict[str, dict[str, object]]:
    r = api.client.get(f"{api.env_url(env)}/resolved", headers=api.h)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (body["project"], body["environment"]) == ("microblog", env)
    return dict(body["values"])


def test_production_inherits_common_and_nearest_wins(api: Api) -> None:
    api.make_env("prod-eu", parent="production")
    shared, common_only, prod_override, eu_override = (random_value() for _ in range(4))
    assert api.put("common", "SHARED", shared).status_code == 200
    assert api.put("common", "LOG_LEVEL", common_only, sensitive=False).status_code == 200
    assert api.put("common", "DB_URL", random_value()).status_code == 200
    assert api.put("production", "DB_URL", prod_override).status_code == 200
    assert api.put("common", "REGION", random_value()).status_code == 200
    assert api.put("production", "REGION", random_value()).status_code == 200
    assert api.put("prod-eu", "REGION", eu_override).status_code == 200

    prod = resolved(api, "production")
    assert prod["SHARED"] == {"value": shared, "version": 1, "environment": "common", "sensitive": True}
    assert prod["LOG_LEVEL"] == {
        "value": common_only,
        "version": 1,
        "environment": "common",
        "sensitive": False,
    }
    assert prod["DB_URL"] == {
        "value": prod_override,
        "version": 1,
        "environment": "production",
        "sensitive": True,
    }
    assert prod["REGION"]["environment"] == "production"

    eu = resolved(api, "prod-eu")
    assert set(eu) == {"SHARED", "LOG_LEVEL", "DB_URL", "REGION"}
    assert (eu["REGION"]["value"], eu["REGION"]["environment"]) == (eu_override, "prod-eu")
    assert (eu["DB_URL"]["value"], eu["DB_URL"]["environment"]) == (prod_override, "production")
    assert eu["SHARED"]["environment"] == "common"

    # a parent does not see its children's values
    common = resolved(api, "common")
    assert {k: v["environment"] for k, v in common.items()} == dict.fromkeys(
        ("DB_URL", "LOG_LEVEL", "REGION", "SHARED"), "common"
    )
    assert prod_override not in str(common)

    # the environment's own list shows only its own secrets
    own = api.client.get(api.url("production"), headers=api.h).json()["secrets"]
    assert sorted(s["name"] for s in own) == ["DB_URL", "REGION"]


def test_parent_updates_and_deleted_overrides_show_through(api: Api) -> None:
    assert api.put("common", "S", random_value()).status_code == 200
    latest = random_value()
    assert api.put("common", "S", latest).status_code == 200
    got = resolved(api, "production")["S"]
    assert (got["value"], got["version"], got["environment"]) == (latest, 2, "common")

    parent_value, child_value = random_value(), random_value()
    assert api.put("common", "X", parent_value).status_code == 200
    assert api.put("production", "X", child_value).status_code == 200
    assert resolved(api, "production")["X"]["value"] == child_value
    assert api.client.delete(api.url("production", "X"), headers=api.h).status_code == 204
    got = resolved(api, "production")["X"]
    assert (got["value"], got["environment"]) == (parent_value, "common")


def test_parent_cycles_are_refused(api: Api) -> None:
    api.make_env("staging", parent="production")
    before = api.client.get("/v1/projects/microblog/environments", headers=api.h).json()
    for env, parent in (("common", "production"), ("common", "staging"), ("common", "common")):
        r = api.client.patch(f"{api.env_url(env)}", json={"parent": parent}, headers=api.h)
        body = problem(r, 400)
        assert body["detail"].startswith("parent:"), body
        assert "cycle" in body["detail"]
    assert api.client.get("/v1/projects/microblog/environments", headers=api.h).json() == before
    # resolution still terminates and is unchanged
    assert api.put("common", "A", random_value()).status_code == 200
    assert resolved(api, "staging")["A"]["environment"] == "common"
    # a legal re-parenting works
    r = api.client.patch(f"{api.env_url('staging')}", json={"parent": "common"}, headers=api.h)
    assert r.status_code == 200 and r.json()["parent"] == "common"
    body = problem(api.client.patch(f"{api.env_url('staging')}", json={"parent": "nope"}, headers=api.h), 400)
    assert body["detail"].startswith("parent:")


def test_deleting_an_environment_in_use_is_409(api: Api) -> None:
    # common has a child (production)
    problem(api.client.delete(api.env_url("common"), headers=api.h), 409)
    # an environment holding a secret (even a soft-deleted one)
    api.make_env("scratch")
    assert api.put("scratch", "TMP", random_value()).status_code == 200
    assert api.client.delete(api.url("scratch", "TMP"), headers=api.h).status_code == 204
    problem(api.client.delete(api.env_url("scratch"), headers=api.h), 409)
    envs = {
        e["slug"]
        for e in api.client.get("/v1/projects/microblog/environments", headers=api.h).json()["environments"]
    }
    assert envs == {"common", "production", "scratch"}
    # an empty leaf can go
    api.make_env("empty", parent="common")
    assert api.client.delete(api.env_url("empty"), headers=api.h).status_code == 204
    problem(api.client.get(api.env_url("empty"), headers=api.h), 404)
    problem(api.client.get(f"{api.env_url('empty')}/resolved", headers=api.h), 404)


def test_a_whole_environment_loads_in_one_statement(api: Api) -> None:
    # The chain's environments and their current rows come back together (repositories.secrets.chain_rows).
    api.make_env("prod-eu", parent="production")
    for env, name in (("common", "A"), ("common", "B"), ("production", "A"), ("prod-eu", "C")):
        assert api.put(env, name, random_value()).status_code == 200
    assert api.client.delete(api.url("production", "A"), headers=api.h).status_code == 204
    statements: list[str] = []
    ours: list[object] = []

    def count(conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # Only this connection's statements (the broker's background audit tasks share the engine), and
        # not SQLite's transaction control.
        if conn in ours and not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(statement)

    engine = api.rt.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:

        async def go() -> dict[str, tuple[str, int]]:
            async with api.rt.engine.connect() as conn:
                ours.append(conn.sync_connection)
                seen = await visible.load(conn, "microblog", "prod-eu")
            return {name: (s.environment, s.row.version) for name, s in seen.rows.items()}

        got = api.run(go)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    # production's A is deleted: common's shows through.
    assert got == {"A": ("common", 1), "B": ("common", 1), "C": ("prod-eu", 1)}


def test_a_parent_cycle_made_in_the_database_ends_the_walk(api: Api) -> None:
    # The API refuses cycles; a direct edit of parent_id must not hang or duplicate values.
    common, prod = random_value(), random_value()
    assert api.put("common", "C", common).status_code == 200
    assert api.put("production", "P", prod).status_code == 200
    ids = dict(api.query(select(environments.c.slug, environments.c.id)))
    assert api.execute(
        update(environments).where(environments.c.id == ids["common"]).values(parent_id=ids["production"])
    )
    for env in ("production", "common"):
        got = resolved(api, env)
        assert {k: (v["value"], v["environment"]) for k, v in got.items()} == {
            "C": (common, "common"),
            "P": (prod, "production"),
        }


def test_the_deepest_chain_allowed_sees_its_root(api: Api) -> None:
    # common is level 1 and production level 2: build levels 3..MAX_DEPTH, then one more is refused.
    parent = "production"
    for level in range(3, MAX_DEPTH + 1):
        api.make_env(f"l{level}", parent=parent)
        parent = f"l{level}"
    root = random_value()
    assert api.put("common", "ROOT", root).status_code == 200
    got = resolved(api, parent)["ROOT"]
    assert (got["value"], got["environment"]) == (root, "common")
    r = api.client.post(
        "/v1/projects/microblog/environments", json={"slug": "toodeep", "parent": parent}, headers=api.h
    )
    assert problem(r, 400)["detail"].startswith("parent:")
