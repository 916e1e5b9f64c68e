"""J54 size limits and strict bodies; J55 secrets out of URLs and out of caches."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from broker.main import build_runtime, create_app
from tests.conftest import make_settings
from tests.integration.secrets.conftest import Api, problem, random_value

MIB = 1024 * 1024
JSON = ("content-type", "application/json")


def big_body(size: int = 2 * MIB) -> bytes:
    """A well-formed JSON body of about `size` bytes (a huge value)."""
    return json.dumps({"value": "A" * size}).encode()


def assert_413_unparsed(api: Api, r: Any) -> None:
    body = problem(r, 413)
    assert body["detail"].startswith("body:")
    event = api.one_audit(r.headers["x-request-id"])
    assert (event["outcome"], event["status"]) == ("invalid", 413)
    # refused at the edge: no handler ran and no token was checked (the edge names the action from the route)
    assert event["reason"] == "request body over the size limit" and event["actor_id"] is None


def chunks_of(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_bodies_over_the_limit_are_413_before_parsing(api: Api, subtests: pytest.Subtests) -> None:
    # control: streaming without a length, under the limit, is accepted (so a 413 is about size alone)
    small = json.dumps({"value": "B" * 60000}).encode()
    r = api.raw("PUT", api.url("common", "BIG"), headers=[JSON], chunks=chunks_of(small, 1000))
    assert r.status == 200, r.text
    before = api.stored()
    url = api.url("common", "BIG")
    with subtests.test("declared Content-Length over the limit"):
        r = api.client.put(url, content=big_body(), headers={**api.h, "content-type": "application/json"})
        assert_413_unparsed(api, r)
    with subtests.test("streamed, no Content-Length"):
        assert_413_unparsed(api, api.raw("PUT", url, headers=[JSON], chunks=chunks_of(big_body())))
    with subtests.test("Content-Length lies (20)"):
        lying = [JSON, ("content-length", "20")]
        assert_413_unparsed(api, api.raw("PUT", url, headers=lying, chunks=chunks_of(big_body())))
    for declared in ("-1", "1e9", "abc", "99999999999999999999"):
        with subtests.test("malformed Content-Length", declared=declared):
            headers = [JSON, ("content-length", declared)]
            assert_413_unparsed(api, api.raw("PUT", url, headers=headers, chunks=[b"{}"]))
    assert api.stored() == before
    assert api.value("common", "BIG") == "B" * 60000


def test_value_over_64_kib_is_400_naming_value(api: Api) -> None:
    assert api.put("common", "V", "A" * 65536).status_code == 200  # exactly 64 KiB is fine
    before = api.stored()
    for too_big in ("A" * 65537, "\u00e9" * 40000, "\U0001f511" * 20000):
        body = problem(api.put("common", "V", too_big), 400)
        assert body["detail"].startswith("value:"), body
        assert "65536" in body["detail"]
    assert api.stored() == before
    assert api.value("common", "V") == "A" * 65536


def test_unknown_keys_are_400_naming_the_key(api: Api) -> None:
    assert api.put("common", "K", "v1").status_code == 200
    before = api.stored()
    cases = [
        ("PUT", api.url("common", "K"), {"value": "v2", "ttl_override": 1}, "ttl_override"),
        ("PUT", api.url("common", "K"), {"value": "v2", "Value": "v3"}, "Value"),
        ("POST", f"{api.url('common', 'K')}/rollback", {"version": 1, "force": True}, "force"),
        ("PATCH", api.env_url("production"), {"parent": None, "inherit_all": True}, "inherit_all"),
    ]
    for method, url, payload, key in cases:
        r = api.client.request(method, url, json=payload, headers=api.h)
        body = problem(r, 400)
        assert body["detail"].startswith(f"{key}:"), body
        assert "extra" in body["detail"].lower()
    assert api.stored() == before
    envs = api.client.get("/v1/projects/microblog/environments", headers=api.h).json()["environments"]
    assert {e["slug"]: e["parent"] for e in envs}["production"] == "common"


def test_type_confused_json_is_400_without_echo(api: Api, canary: str) -> None:
    assert api.put("common", "T", "v1").status_code == 200
    before = api.stored()
    number = 918273645546372819
    for payload in (
        {"value": number},
        {"value": 1.5e300},
        {"value": True},
        {"value": None},
        {"value": {"nested": canary}},
        {"value": [canary]},
        {"value": [[[[canary]]]]},
        {"value": canary, "cas": [1]},
        {"value": canary, "cas": {"$gt": 0}},
        {"value": canary, "cas": 1.5},
        {"value": canary, "sensitive": {"x": 1}},
        [canary],
        canary,
    ):
        r = api.client.put(api.url("common", "T"), json=payload, headers=api.h)
        body = problem(r, 400)
        assert canary not in r.text and str(number) not in r.text
        assert re.match(r"^[A-Za-z_.0-9]+: ", body["detail"]), body
    # malformed JSON and a wrong content type
    for raw, ctype in (
        (b'{"value": "' + canary.encode(), "application/json"),
        (canary.encode(), "text/plain"),
    ):
        r = api.client.put(api.url("common", "T"), content=raw, headers={**api.h, "content-type": ctype})
        problem(r, 400)
        assert canary not in r.text
    assert api.stored() == before


def test_value_bearing_responses_are_no_store(api: Api) -> None:
    assert api.put("common", "C", random_value()).status_code == 200
    assert api.put("common", "C", random_value()).status_code == 200
    for r in (
        api.get("common", "C"),
        api.get("common", "C", version=1),
        api.client.get(f"{api.env_url('production')}/resolved", headers=api.h),
    ):
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
    # errors on those routes are not cacheable either
    r = api.get("common", "NOPE")
    assert r.status_code == 404 and r.headers["cache-control"] == "no-store"


SENSITIVE_PARAM = re.compile(r"token|secret|value|passw|pwd|key|credential|auth", re.IGNORECASE)


def test_openapi_has_no_secret_shaped_path_or_query_parameters(tmp_path: Path) -> None:
    """Static: the OpenAPI document of the app (no database is touched)."""
    runtime = build_runtime(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path))
    edge = create_app(runtime)
    doc = edge.app.openapi()  # type: ignore[attr-defined]  # the Edge wraps the FastAPI app
    checked = 0
    for path, item in doc["paths"].items():
        for segment in re.findall(r"\{([^}]+)\}", path):
            assert not SENSITIVE_PARAM.search(segment), (path, segment)
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                if param.get("in") in ("path", "query"):
                    checked += 1
                    assert not SENSITIVE_PARAM.search(param["name"]), (method, path, param["name"])
    # the walk saw the secrets routes (so an empty document cannot pass)
    assert any(p.endswith("/secrets/{name}") for p in doc["paths"])
    assert checked >= 20
