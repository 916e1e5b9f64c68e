"""A1 confidentiality at rest, A3 bit flips, A4 row swaps and 58 path swaps, through the API and the database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from broker.db.base import metadata
from broker.models import environments, projects
from broker.models import secrets as secrets_table
from tests.integration.secrets.conftest import Api, problem, random_value

WINDOW = 8
HEX_RUN = re.compile(rb"[0-9A-F]{%d,}" % WINDOW)


class Scanner:
    """Finds any 8-byte substring of the planted values in a blob.

    The values are upper-case hex, so any such substring lies inside a run of at least 8 upper-case
    hex characters: finding the runs with a regex and checking their windows against a set is exact.
    """

    def __init__(self, values: Iterable[str]) -> None:
        self.windows: set[bytes] = set()
        for v in values:
            raw = v.encode()
            assert re.fullmatch(rb"[0-9A-F]+", raw) and len(raw) >= WINDOW
            self.windows.update(raw[i : i + WINDOW] for i in range(len(raw) - WINDOW + 1))

    def hits(self, blob: bytes) -> list[bytes]:
        found = []
        for m in HEX_RUN.finditer(blob):
            run = m.group()
            found += [
                run[i : i + WINDOW]
                for i in range(len(run) - WINDOW + 1)
                if run[i : i + WINDOW] in self.windows
            ]
        return found


def table_dump(api: Api) -> bytes:
    """Every row of every table (and alembic_version), cells as bytes."""
    out: list[bytes] = []
    tables = [*metadata.sorted_tables]
    assert {"secrets", "secret_versions", "audit_events", "tokens", "principals"} <= {t.name for t in tables}
    for table in tables:
        for row in api.query(select(table)):
            for cell in row:
                out.append(cell if isinstance(cell, bytes) else str(cell).encode("utf-8", "surrogateescape"))
    for row in api.query(text("SELECT version_num FROM alembic_version")):
        out.append(str(row[0]).encode())
    return b"\x00".join(out)


def pg_files(request: pytest.FixtureRequest, api: Api) -> list[Path]:
    """The PostgreSQL database's own data files and the cluster's WAL, after a checkpoint."""
    cluster = request.getfixturevalue("pg_cluster")
    cluster.psql("CHECKPOINT")
    db = make_url(api.rt.settings.resolved_database_url).database
    oid = cluster.psql(f"SELECT oid FROM pg_database WHERE datname = '{db}'").strip()
    files = [p for p in (cluster.datadir / "base" / oid).rglob("*") if p.is_file()]
    files += [p for p in (cluster.datadir / "pg_wal").glob("*") if p.is_file()]
    return files


def storage_files(request: pytest.FixtureRequest, api: Api, tmp_path: Path) -> list[Path]:
    if api.rt.settings.resolved_database_url.startswith("sqlite"):
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert {"broker.db", "broker.db-wal", "broker.db-shm"} <= names, names
        assert (tmp_path / "broker.db-wal").stat().st_size > 0
        return files
    return pg_files(request, api)


def test_no_plaintext_at_rest(api: Api, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    values = [random_value() for _ in range(100)]
    for i, value in enumerate(values):
        env = ("common", "production")[i % 2]
        assert api.put(env, f"S{i:03d}", value).status_code == 200
    # exercise the other writers of version rows too
    assert (
        api.client.post(
            f"{api.url('common', 'S000')}/rollback", json={"version": 1}, headers=api.h
        ).status_code
        == 200
    )
    assert api.client.delete(api.url("common", "S002"), headers=api.h).status_code == 204
    assert api.client.get(f"{api.env_url('production')}/resolved", headers=api.h).status_code == 200
    # positive control: a project description is stored in clear, so the scan must find it
    control = random_value()
    r = api.client.post("/v1/projects", json={"slug": "control", "description": control}, headers=api.h)
    assert r.status_code == 201

    scanner = Scanner(values)
    assert Scanner([control]).hits(table_dump(api)), "the row scan cannot see plaintext"
    assert scanner.hits(table_dump(api)) == []

    files = storage_files(request, api, tmp_path)
    blobs = {p: p.read_bytes() for p in files}
    assert any(Scanner([control]).hits(b) for b in blobs.values()), "the file scan cannot see plaintext"
    leaks = {str(p): scanner.hits(b)[:3] for p, b in blobs.items() if scanner.hits(b)}
    assert leaks == {}


def flip(blob: bytes, pos: int) -> bytes:
    out = bytearray(blob)
    out[pos] ^= 1 << (pos % 8)
    return bytes(out)


GENERIC_500 = {"type": "about:blank", "title": "Internal Server Error", "status": 500}


def assert_generic_500(r: Any, detail: str | None, forbidden: Iterable[bytes]) -> str:
    body = problem(r, 500)
    assert {k: body[k] for k in GENERIC_500} == GENERIC_500
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    if detail is not None:
        assert body["detail"] == detail  # one message whatever failed
    raw = r.content if hasattr(r, "content") else r.body
    for secret in forbidden:
        assert secret not in raw
        assert secret.hex().encode() not in raw.lower()
    return str(body["detail"])


def test_every_flipped_bit_is_a_generic_500(api: Api) -> None:
    value = random_value()[:16]
    assert api.put("common", "FLIP", value).status_code == 200
    row = api.version_row("common", "FLIP", 1)
    ct, wrapped, kek = row["ciphertext"], row["wrapped_dek"], row["kek_id"]
    assert len(ct) == 29 + len(value) and wrapped[0] == 1
    forbidden = [value.encode(), value[:8].encode(), value[8:].encode(), ct[1:13], wrapped[1:]]
    detail: str | None = None
    request_ids: list[str] = []
    corruptions = [{"ciphertext": flip(ct, i)} for i in range(len(ct))]
    corruptions += [{"wrapped_dek": flip(wrapped, i)} for i in range(len(wrapped))]
    corruptions += [
        {"ciphertext": ct[:-1]},
        {"ciphertext": ct + b"\x00"},
        {"ciphertext": b""},
        {"wrapped_dek": wrapped[:-1]},
        {"wrapped_dek": b"\x01"},
        {"kek_id": "not a key id!"},  # malformed: damage, and never echoed
    ]
    for bad in corruptions:
        api.set_version_row(row["id"], **bad)
        r = api.get("common", "FLIP")
        detail = assert_generic_500(r, detail, forbidden)
        request_ids.append(r.headers["x-request-id"])
    assert "integrity" in (detail or "")
    # resolution that meets the damaged row fails the same way, and never returns the rest
    r = api.client.get(f"{api.env_url('production')}/resolved", headers=api.h)
    assert_generic_500(r, detail, forbidden)
    request_ids.append(r.headers["x-request-id"])

    events = {e["request_id"]: e for e in api.all_audit()}
    assert all((events[rid]["outcome"], events[rid]["status"]) == ("error", 500) for rid in request_ids)
    assert all(events[rid]["action"] in ("secret.read", "secret.resolve") for rid in request_ids)
    assert len({e["id"] for e in api.all_audit() if e["request_id"] in set(request_ids)}) == len(request_ids)

    # the damage alone caused the failures: the original bytes read fine again
    api.set_version_row(row["id"], ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
    assert api.value("common", "FLIP") == value


def test_a_key_id_the_keyring_lacks_is_reported_as_that(api: Api) -> None:
    """A well-formed KEK id that this broker's keyring does not hold (a rotation not picked up, a key
    retired too early) is a 503 naming the key, not an integrity failure."""
    value = random_value()[:16]
    assert api.put("common", "MISSING_KEY", value).status_code == 200
    row = api.version_row("common", "MISSING_KEY", 1)
    api.set_version_row(row["id"], kek_id="k-20990101-abcdef")
    for r in (
        api.get("common", "MISSING_KEY"),
        api.get("common", "MISSING_KEY", version=1),
        api.client.get(f"{api.env_url('production')}/resolved", headers=api.h),
    ):
        body = problem(r, 503)
        assert "k-20990101-abcdef" in body["detail"] and "integrity" not in body["detail"], body
        assert value.encode() not in r.content
        event = api.one_audit(r.headers["x-request-id"])
        assert (event["outcome"], event["status"]) == ("error", 503)
    api.set_version_row(row["id"], kek_id=row["kek_id"])
    assert api.value("common", "MISSING_KEY") == value


def test_rows_moved_to_another_place_never_decrypt(api: Api) -> None:
    api.make_project("other-app")
    api.make_env("common", project="other-app")
    src1, src2, other, prod, foreign = (random_value() for _ in range(5))
    assert api.put("common", "SRC", src1).status_code == 200
    assert api.put("common", "SRC", src2).status_code == 200
    assert api.put("common", "OTHER", other).status_code == 200
    assert api.put("production", "SRC", prod).status_code == 200
    r = api.client.put(api.url("common", "SRC", project="other-app"), json={"value": foreign}, headers=api.h)
    assert r.status_code == 200
    source = api.version_row("common", "SRC", 1)
    blob = {k: source[k] for k in ("ciphertext", "wrapped_dek", "kek_id")}
    all_values = [v.encode() for v in (src1, src2, other, prod, foreign)]

    targets = {
        "another name": (("common", "OTHER", 1, "microblog"), {}),
        "another environment": (("production", "SRC", 1, "microblog"), {}),
        "another project": (("common", "SRC", 1, "other-app"), {}),
        "another version": (("common", "SRC", 2, "microblog"), {}),
        "another version, read by number": (("common", "SRC", 2, "microblog"), {"version": 2}),
    }
    detail: str | None = None
    for label, ((env, name, version, project), params) in targets.items():
        target = api.version_row(env, name, version, project=project)
        saved = {k: target[k] for k in blob}
        for moved in (blob, {"ciphertext": blob["ciphertext"]}, {"wrapped_dek": blob["wrapped_dek"]}):
            api.set_version_row(target["id"], **moved)
            r = api.client.get(api.url(env, name, project=project), params=params, headers=api.h)
            assert r.status_code == 500, (label, moved.keys(), r.status_code)
            detail = assert_generic_500(r, detail, all_values)
            assert api.one_audit(r.headers["x-request-id"])["outcome"] == "error"
            if env == "production":
                resolved = api.client.get(f"{api.env_url('production')}/resolved", headers=api.h)
                assert_generic_500(resolved, detail, all_values)
        api.set_version_row(target["id"], **saved)
    # the source itself still reads, and the targets are whole again
    assert api.get("common", "SRC", version=1).json()["value"] == src1
    assert api.value("common", "OTHER") == other
    assert api.value("production", "SRC") == prod
    assert api.value("common", "SRC") == src2


def _reads(api: Api, env: str, name: str, project: str = "microblog") -> list[Any]:
    """Every route that can serve `name` in `env`: the one-value read (the fast path first), a read by
    version number (the general path), resolution and the named-values (compile) route."""
    return [
        api.client.get(api.url(env, name, project=project), headers=api.h),
        api.client.get(api.url(env, name, project=project), params={"version": 1}, headers=api.h),
        api.client.get(f"{api.env_url(env, project)}/resolved", headers=api.h),
        api.client.post(f"{api.env_url(env, project)}/values", json={"names": [name]}, headers=api.h),
    ]


def _refused(api: Api, replies: list[Any], values: list[bytes]) -> None:
    detail: str | None = None
    for r in replies:
        detail = assert_generic_500(r, detail, values)
        event = api.one_audit(r.headers["x-request-id"])
        assert (event["outcome"], event["status"]) == ("error", 500), event
    assert "integrity" in (detail or "")


def _swap(api: Api, table: Any, column: str, a: int, b: int, temp: str) -> None:
    """Swap `column` of rows a and b as a database writer would (through a temporary value, since the
    column is unique)."""
    (va,) = api.query(select(table.c[column]).where(table.c.id == a))[0]
    (vb,) = api.query(select(table.c[column]).where(table.c.id == b))[0]
    api.execute(update(table).where(table.c.id == a).values({column: temp}))
    api.execute(update(table).where(table.c.id == b).values({column: va}))
    api.execute(update(table).where(table.c.id == a).values({column: vb}))


def test_58_path_swaps_through_metadata_are_refused(api: Api) -> None:
    """SECURITY.md 58: with write access to the database and no key, swap two environments' or projects'
    slugs, rename a secret row or set current_version back; the broker never serves a value under a
    project, environment, name or version other than the one it was written as."""
    api.make_env("staging")
    api.make_project("other-app")
    api.make_env("production", project="other-app")
    prod, staging, foreign, old, new = (random_value() for _ in range(5))
    assert api.put("production", "A", prod).status_code == 200
    assert api.put("staging", "A", staging).status_code == 200
    r = api.client.put(
        api.url("production", "A", project="other-app"), json={"value": foreign}, headers=api.h
    )
    assert r.status_code == 200
    assert api.put("common", "B", old).status_code == 200
    assert api.put("common", "B", new).status_code == 200
    values = [v.encode() for v in (prod, staging, foreign, old, new)]
    env_ids = dict(
        api.query(select(environments.c.slug, environments.c.id).where(environments.c.slug != "common"))
    )
    project_ids = dict(api.query(select(projects.c.slug, projects.c.id)))

    # Two environments' slugs swapped: staging would answer with production's value.
    prod_env = api.query(
        select(environments.c.id).where(
            environments.c.slug == "production", environments.c.project_id == project_ids["microblog"]
        )
    )[0][0]
    _swap(api, environments, "slug", prod_env, env_ids["staging"], "swap-tmp")
    _refused(api, _reads(api, "staging", "A") + _reads(api, "production", "A"), values)
    _swap(api, environments, "slug", prod_env, env_ids["staging"], "swap-tmp")
    assert api.value("staging", "A") == staging and api.value("production", "A") == prod

    # Two projects' slugs swapped: microblog/production would answer with other-app's value.
    _swap(api, projects, "slug", project_ids["microblog"], project_ids["other-app"], "swap-tmp")
    _refused(
        api, _reads(api, "production", "A") + _reads(api, "production", "A", project="other-app"), values
    )
    _swap(api, projects, "slug", project_ids["microblog"], project_ids["other-app"], "swap-tmp")
    assert api.value("production", "A") == prod

    # A secret row renamed: B's value offered as C.
    api.execute(update(secrets_table).where(secrets_table.c.name == "B").values(name="C"))
    _refused(api, _reads(api, "common", "C"), values)
    api.execute(update(secrets_table).where(secrets_table.c.name == "C").values(name="B"))
    assert api.value("common", "B") == new

    # current_version set back: the older value offered as current.
    api.execute(update(secrets_table).where(secrets_table.c.name == "B").values(current_version=1))
    _refused(api, _reads(api, "common", "B"), values)
    # ... and a write on top of it is refused too, rather than blessing the rollback.
    r = api.put("common", "B", random_value())
    assert_generic_500(r, None, values)
    api.execute(update(secrets_table).where(secrets_table.c.name == "B").values(current_version=2))
    assert api.value("common", "B") == new
    assert api.get("common", "B", version=1).json()["value"] == old

    # A binding copied from another secret does not fit either.
    (other,) = api.query(
        select(secrets_table.c.binding).where(secrets_table.c.environment_id == env_ids["staging"])
    )[0]
    (mine,) = api.query(select(secrets_table.c.binding).where(secrets_table.c.name == "B"))[0]
    api.execute(update(secrets_table).where(secrets_table.c.name == "B").values(binding=other))
    _refused(api, _reads(api, "common", "B"), values)
    api.execute(update(secrets_table).where(secrets_table.c.name == "B").values(binding=mine))
    assert api.value("common", "B") == new
