"""Secrets lifecycle through the API: write, read, list, check-and-set, delete, history, destroy, rollback."""

from __future__ import annotations

from tests.integration.secrets.conftest import Api, problem, random_value


def test_write_read_and_list_without_values(api: Api) -> None:
    a, b = random_value(), random_value()
    r = api.put("common", "DB_PASSWORD", a)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "DB_PASSWORD" and meta["version"] == 1 and meta["deleted"] is False
    assert a not in r.text
    assert api.put("common", "API_KEY", b, sensitive=False).status_code == 200

    r = api.get("common", "DB_PASSWORD")
    assert r.status_code == 200
    body = r.json()
    assert body["value"] == a and body["version"] == 1 and body["environment"] == "common"
    assert body["sensitive"] is True
    other = api.get("common", "API_KEY").json()
    assert (other["value"], other["sensitive"]) == (b, False)

    r = api.client.get(api.url("common"), headers=api.h)
    assert r.status_code == 200
    assert a not in r.text and b not in r.text
    listed = r.json()["secrets"]
    assert [s["name"] for s in listed] == ["API_KEY", "DB_PASSWORD"]
    assert all("value" not in s for s in listed)
    assert {s["name"]: s["sensitive"] for s in listed} == {"API_KEY": False, "DB_PASSWORD": True}


def test_check_and_set(api: Api) -> None:
    first, second = random_value(), random_value()
    assert api.put("common", "TOKEN", first, cas=0).status_code == 200
    before = api.stored()
    body = problem(api.put("common", "TOKEN", second, cas=0), 409)
    assert "cas" in body["detail"]
    assert second not in body["detail"]
    assert api.stored() == before
    assert api.value("common", "TOKEN") == first

    v1, v2, v3 = random_value(), random_value(), random_value()
    assert api.put("common", "K", v1).json()["version"] == 1
    assert api.put("common", "K", v2, cas=1).json()["version"] == 2
    before = api.stored()
    for stale in (1, 3, 99):
        body = problem(api.put("common", "K", v3, cas=stale), 409)
        assert "stale" in body["detail"]
    assert api.stored() == before
    got = api.get("common", "K").json()
    assert (got["value"], got["version"]) == (v2, 2)
    # cas on a secret that does not exist yet is also stale
    problem(api.put("common", "NEW", v3, cas=1), 409)
    assert api.get("common", "NEW").status_code == 404
    # the right cas works
    assert api.put("common", "K", v3, cas=2).json()["version"] == 3


def test_read_old_versions(api: Api) -> None:
    values = [random_value() for _ in range(3)]
    for v in values:
        assert api.put("common", "ROTATED", v).status_code == 200
    for n, v in enumerate(values, start=1):
        r = api.get("common", "ROTATED", version=n)
        assert r.status_code == 200, r.text
        assert (r.json()["value"], r.json()["version"]) == (v, n)
        assert r.headers["cache-control"] == "no-store"
    problem(api.get("common", "ROTATED", version=4), 404)
    problem(api.get("common", "ROTATED", version=0), 400)


def test_soft_delete_and_undelete(api: Api) -> None:
    value = random_value()
    assert api.put("common", "GONE", value).status_code == 200
    assert api.put("common", "STAYS", random_value()).status_code == 200
    r = api.client.delete(api.url("common", "GONE"), headers=api.h)
    assert r.status_code == 204, r.text

    body = problem(api.get("common", "GONE"), 404)
    assert value not in body["detail"]
    problem(api.get("common", "GONE", version=1), 404)
    names = [s["name"] for s in api.client.get(api.url("common"), headers=api.h).json()["secrets"]]
    assert names == ["STAYS"]
    listed = api.client.get(api.url("common"), params={"include_deleted": "true"}, headers=api.h).json()
    assert {s["name"]: s["deleted"] for s in listed["secrets"]} == {"GONE": True, "STAYS": False}
    for env in ("common", "production"):
        resolved = api.client.get(f"{api.env_url(env)}/resolved", headers=api.h)
        assert resolved.status_code == 200
        assert "GONE" not in resolved.json()["values"] and value not in resolved.text
    problem(api.client.delete(api.url("common", "GONE"), headers=api.h), 404)

    r = api.client.post(f"{api.url('common', 'GONE')}/undelete", headers=api.h)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is False and r.json()["version"] == 1
    assert api.value("common", "GONE") == value
    resolved = api.client.get(f"{api.env_url('production')}/resolved", headers=api.h).json()
    assert resolved["values"]["GONE"]["value"] == value
    problem(api.client.post(f"{api.url('common', 'GONE')}/undelete", headers=api.h), 409)


def test_history_newest_first_with_authors(api: Api) -> None:
    writer = api.token_for([{"project": "microblog", "environments": "*", "actions": ["read", "write"]}])
    assert api.put("common", "H", random_value()).status_code == 200
    r = api.client.put(api.url("common", "H"), json={"value": random_value()}, headers=writer)
    assert r.status_code == 200, r.text
    assert api.put("common", "H", random_value()).status_code == 200
    assert api.client.delete(api.url("common", "H"), headers=api.h).status_code == 204

    r = api.client.get(f"{api.url('common', 'H')}/versions", headers=api.h)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "H" and body["current_version"] == 3
    assert [v["version"] for v in body["versions"]] == [3, 2, 1]
    assert [v["author"] for v in body["versions"]] == ["admin", "ci-bot", "admin"]
    assert [v["deleted"] for v in body["versions"]] == [True, False, False]
    assert not any(v["destroyed"] for v in body["versions"])
    stamps = [v["created_at"] for v in body["versions"]]
    assert stamps == sorted(stamps, reverse=True)
    problem(api.client.get(f"{api.url('common', 'NOPE')}/versions", headers=api.h), 404)


def test_destroy_erases_ciphertext_for_good(api: Api) -> None:
    old, new = random_value(), random_value()
    assert api.put("common", "D", old).status_code == 200
    assert api.put("common", "D", new).status_code == 200
    r = api.client.post(f"{api.url('common', 'D')}/versions/1/destroy", headers=api.h)
    assert r.status_code == 204, r.text

    row = api.version_row("common", "D", 1)
    assert row["ciphertext"] is None and row["wrapped_dek"] is None and row["kek_id"] is None
    assert row["destroyed_at"] is not None
    kept = api.version_row("common", "D", 2)
    assert kept["ciphertext"] is not None and kept["wrapped_dek"] is not None

    problem(api.get("common", "D", version=1), 404)
    before = api.stored()
    body = problem(
        api.client.post(f"{api.url('common', 'D')}/rollback", json={"version": 1}, headers=api.h), 409
    )
    assert "destroyed" in body["detail"]
    assert api.stored() == before
    assert api.value("common", "D") == new
    hist = api.client.get(f"{api.url('common', 'D')}/versions", headers=api.h).json()["versions"]
    assert [(v["version"], v["destroyed"]) for v in hist] == [(2, False), (1, True)]
    # destroying a version that does not exist
    problem(api.client.post(f"{api.url('common', 'D')}/versions/9/destroy", headers=api.h), 404)

    # destroying the current version
    value = random_value()
    assert api.put("common", "ONLY", value).status_code == 200
    assert (
        api.client.post(f"{api.url('common', 'ONLY')}/versions/1/destroy", headers=api.h).status_code == 204
    )
    problem(api.get("common", "ONLY"), 404)
    resolved = api.client.get(f"{api.env_url('common')}/resolved", headers=api.h)
    assert "ONLY" not in resolved.json()["values"] and value not in resolved.text
    # destroying the current version hides the secret like a delete, and it cannot be undeleted
    assert [s["name"] for s in api.client.get(api.url("common"), headers=api.h).json()["secrets"]] == ["D"]
    problem(api.client.post(f"{api.url('common', 'ONLY')}/undelete", headers=api.h), 409)


def test_rollback_creates_a_new_version_with_the_old_value(api: Api) -> None:
    v1, v2 = random_value(), random_value()
    assert api.put("common", "R", v1).status_code == 200
    assert api.put("common", "R", v2).status_code == 200
    r = api.client.post(f"{api.url('common', 'R')}/rollback", json={"version": 1}, headers=api.h)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and v1 not in r.text
    got = api.get("common", "R").json()
    assert (got["value"], got["version"]) == (v1, 3)
    assert api.get("common", "R", version=2).json()["value"] == v2
    assert api.versions("common", "R") == [3, 2, 1]
    # the new version is its own ciphertext, not a copy of version 1's row
    assert api.version_row("common", "R", 3)["ciphertext"] != api.version_row("common", "R", 1)["ciphertext"]
    problem(api.client.post(f"{api.url('common', 'R')}/rollback", json={"version": 7}, headers=api.h), 404)
