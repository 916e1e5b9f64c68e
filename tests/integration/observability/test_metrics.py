"""/metrics: requests by route template and outcome, latency, auth failures, audit failures, checkpoint age
and pool gauges, read from the exposition a scrape gets (a real broker app on SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from broker.main import build_runtime, create_app
from broker.services.audit.chaining import checkpoint_now
from broker.services.auth import bootstrap_admin
from broker.services.metrics import Metrics, exposition
from broker.services.runtime import Runtime
from tests.conftest import make_settings

READ = "/v1/projects/{project}/environments/{environment}/secrets/{name}"


def scrape(
    rt: Runtime, client: TestClient
) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The exposition text a scrape gets, and its samples by (name, sorted labels)."""
    metrics: Metrics = client.app.app.state.metrics  # type: ignore[attr-defined]  # Edge(FastAPI)
    body = generate_latest(exposition(rt.settings, metrics)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return body, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, TestClient, dict[str, str]]]:
    rt = build_runtime(make_settings(db_url, tmp_path, audit_file=tmp_path / "audit" / "events.jsonl"))
    (tmp_path / "audit").mkdir(mode=0o700)
    with TestClient(create_app(rt), client=("127.0.0.1", 50000)) as client:
        created = client.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
        assert created is not None
        r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
        assert r.status_code == 200, r.text
        yield rt, client, {"Authorization": f"Bearer {r.json()['token']}"}


def test_requests_are_counted_by_route_template_never_by_path(
    setup: tuple[Runtime, TestClient, dict[str, str]], canary: str
) -> None:
    rt, client, h = setup
    project, name = "p" + secrets.token_hex(6), "N_" + secrets.token_hex(8).upper()
    assert client.post("/v1/projects", json={"slug": project}, headers=h).status_code == 201
    assert (
        client.post(f"/v1/projects/{project}/environments", json={"slug": "e"}, headers=h).status_code == 201
    )
    url = f"/v1/projects/{project}/environments/e/secrets/{name}"
    assert client.put(url, json={"value": canary}, headers=h).status_code == 200
    _, before = scrape(rt, client)
    for _ in range(3):
        assert client.get(url, headers=h).json()["value"] == canary
    assert client.get(url + "X", headers=h).status_code == 404
    assert client.get(f"/nowhere/{canary}?q={canary}").status_code == 404
    for verb in ("FOO", "BAR"):  # methods outside HTTP's usual ones share one label
        assert client.request(verb, "/up").status_code == 405
    body, after = scrape(rt, client)

    read = {"method": "GET", "route": READ}
    assert (
        value(after, "strongroom_http_requests_total", outcome="2xx", **read)
        - value(before, "strongroom_http_requests_total", outcome="2xx", **read)
        == 3
    )
    assert (
        value(after, "strongroom_http_requests_total", outcome="4xx", **read)
        - value(before, "strongroom_http_requests_total", outcome="4xx", **read)
        == 1
    )
    # The latency histogram saw the same four reads, each in some bucket (the +Inf bucket is the count).
    count = value(after, "strongroom_http_request_duration_seconds_count", **read) - value(
        before, "strongroom_http_request_duration_seconds_count", **read
    )
    assert count == 4
    assert value(after, "strongroom_http_request_duration_seconds_bucket", le="+Inf", **read) == value(
        after, "strongroom_http_request_duration_seconds_count", **read
    )
    assert value(after, "strongroom_http_requests_total", method="GET", route="unmatched", outcome="4xx") >= 1
    assert value(after, "strongroom_http_requests_total", method="other", route="/up", outcome="4xx") == 2
    assert "FOO" not in body and "BAR" not in body
    # Names are data: no project, secret name, value or unmatched path reaches a label.
    for data in (project, name, canary, "/nowhere"):
        assert data not in body
    assert value(after, "strongroom_audit_events_total") > value(before, "strongroom_audit_events_total")


def test_authentication_failures_by_kind(setup: tuple[Runtime, TestClient, dict[str, str]]) -> None:
    rt, client, _ = setup
    _, before = scrape(rt, client)
    bad = {"Authorization": "Bearer srt_" + secrets.token_urlsafe(32)}
    for _ in range(2):
        assert client.get("/v1/projects", headers=bad).status_code == 401
    assert client.get("/v1/projects").status_code == 401
    r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": "srs_" + "x" * 43})
    assert r.status_code == 401
    body, after = scrape(rt, client)
    name = "strongroom_auth_failures_total"
    assert value(after, name, kind="token") - value(before, name, kind="token") == 3
    assert value(after, name, kind="credential") - value(before, name, kind="credential") == 1
    assert bad["Authorization"][7:] not in body


def test_audit_sink_failure_is_counted_by_kind_not_path(
    setup: tuple[Runtime, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    rt, client, h = setup
    sink = tmp_path / "audit" / "events.jsonl"
    _, before = scrape(rt, client)
    sink.unlink()
    sink.mkdir()  # the file sink now fails (a directory where its file was); the database still records
    assert client.get("/v1/projects", headers=h).status_code == 200
    body, after = scrape(rt, client)
    name = "strongroom_audit_sink_failures_total"
    assert value(after, name, sink="file") - value(before, name, sink="file") >= 1
    assert str(tmp_path) not in body
    assert value(after, "strongroom_audit_append_failures_total") == value(
        before, "strongroom_audit_append_failures_total"
    )


def test_audit_append_failure_when_no_sink_records(
    setup: tuple[Runtime, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    """The file sink and the database both refuse the event (a directory in the file's place, a trigger
    refusing inserts into audit_events): the request is answered 503 and counted."""
    rt, client, h = setup
    _, before = scrape(rt, client)
    sink = tmp_path / "audit" / "events.jsonl"
    sink.unlink()
    sink.mkdir()

    async def refuse_audit_inserts() -> None:
        async with rt.engine.begin() as conn:
            if rt.engine.dialect.name == "sqlite":
                await conn.execute(
                    text(
                        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                    )
                )
            else:
                await conn.execute(
                    text(
                        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
                    )
                )
                await conn.execute(
                    text(
                        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                    )
                )

    client.portal.call(refuse_audit_inserts)  # type: ignore[union-attr]
    r = client.get("/v1/projects", headers=h)
    assert r.status_code == 503, r.text
    _, after = scrape(rt, client)
    name = "strongroom_audit_append_failures_total"
    assert value(after, name) - value(before, name) == 1
    assert (
        value(after, "strongroom_http_requests_total", method="GET", route="/v1/projects", outcome="5xx") >= 1
    )


def test_checkpoint_age_and_pool_gauges(setup: tuple[Runtime, TestClient, dict[str, str]]) -> None:
    rt, client, h = setup
    _, samples = scrape(rt, client)
    assert ("strongroom_audit_checkpoint_age_seconds", ()) not in samples  # no checkpoint signed yet
    assert client.get("/v1/projects", headers=h).status_code == 200
    signed = client.portal.call(checkpoint_now, rt)  # type: ignore[union-attr]
    assert signed is not None
    _, samples = scrape(rt, client)
    age = value(samples, "strongroom_audit_checkpoint_age_seconds")
    assert 0 <= age < 3600
    assert value(samples, "strongroom_audit_checkpoints_total") >= 1
    size = value(samples, "strongroom_db_pool_size")
    assert size >= 1

    # Background tasks on the event loop (the chainer, checkpoints) check connections out too, so the gauge
    # is compared with the pool's own count at the same instant: read both on the loop with no await between.
    def both() -> tuple[float, int]:
        gauge = value(scrape(rt, client)[1], "strongroom_db_pool_in_use")
        return gauge, rt.engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]

    async def held() -> tuple[tuple[float, int], tuple[float, int], tuple[float, int]]:
        before = both()
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            inside = both()
        return before, inside, both()

    before, inside, after = client.portal.call(held)  # type: ignore[union-attr]
    assert before[0] == before[1] and after[0] == after[1]
    assert inside[0] == inside[1] >= 1  # the connection held here is counted


def test_console_requests_are_labelled_under_console_and_its_sign_in_is_a_credential(
    setup: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    """The console is mounted at /console: its labels are its full templates, and a wrong client secret
    typed into its sign-in form is a credential failure, a page opened without a session a token one."""
    rt, api, _ = setup
    # A browser's own cookie jar on loopback over http, where the console's cookies are not Secure.
    client = TestClient(api.app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50001))
    client.portal = api.portal
    _, before = scrape(rt, client)
    page = client.get("/console/login")
    assert page.status_code == 200
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    wrong = {"nonce": nonce, "client_id": "admin", "client_secret": "srs_" + "x" * 43}
    assert client.post("/console/login", data=wrong).status_code == 401
    assert client.get("/console/audit").status_code == 401  # no session cookie
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/no-such-page").status_code == 404
    assert client.get("/console", follow_redirects=False).status_code == 307
    body, after = scrape(rt, client)

    def requests(method: str, route: str, outcome: str) -> float:
        labels = {"method": method, "route": route, "outcome": outcome}
        return value(after, "strongroom_http_requests_total", **labels) - value(
            before, "strongroom_http_requests_total", **labels
        )

    assert requests("GET", "/console/login", "2xx") == 1
    assert requests("POST", "/console/login", "4xx") == 1
    assert requests("GET", "/console/audit", "4xx") == 1
    assert requests("GET", "/console/static/console.css", "2xx") == 1
    for relative in ("/login", "/audit", "/static/console.css"):
        assert f'route="{relative}"' not in body
    # Reaching the mount but none of its pages (an unknown page, the redirect to /console/) is unmatched.
    assert requests("GET", "unmatched", "4xx") == 1 and requests("GET", "unmatched", "3xx") == 1
    assert "no-such-page" not in body and 'route="/console/console"' not in body
    name = "strongroom_auth_failures_total"
    assert value(after, name, kind="credential") - value(before, name, kind="credential") == 1
    assert value(after, name, kind="token") - value(before, name, kind="token") == 1
