"""`POST .../secrets/{name}/generate`: generated once by the broker, idempotent, never returned; reveals audited."""

from __future__ import annotations

import asyncio
import base64
import re
import string
from typing import Any

import httpx

from tests.integration.secrets.conftest import CLIENT_ADDR, Api, problem, random_value


def generate(
    api: Api, env: str, name: str, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    r: httpx.Response = api.client.post(f"{api.url(env, name)}/generate", json=body, headers=headers or api.h)
    return r


def test_generate_creates_a_hex_value_once_and_never_returns_it(api: Api) -> None:
    r = generate(api, "common", "SECRET_KEY_BASE")

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generated"] is True and body["rotated"] is False
    assert body["secret"]["name"] == "SECRET_KEY_BASE" and body["secret"]["version"] == 1
    assert body["secret"]["sensitive"] is True
    value = api.value("common", "SECRET_KEY_BASE")
    assert re.fullmatch(r"[0-9a-f]{128}", value)  # 64 bytes by default, as `rails secret`
    assert value not in r.text
    event = api.one_audit(r.headers["x-request-id"])
    assert (event["action"], event["outcome"], event["version"]) == ("secret.generate", "ok", 1)


def test_generate_again_leaves_the_value_alone_and_says_so(api: Api) -> None:
    assert generate(api, "common", "SECRET_KEY_BASE").status_code == 200
    first = api.value("common", "SECRET_KEY_BASE")

    r = generate(api, "common", "SECRET_KEY_BASE", bytes=32, format="alnum")

    assert r.status_code == 200, r.text
    assert r.json()["generated"] is False and r.json()["rotated"] is False
    assert r.json()["secret"]["version"] == 1
    assert api.value("common", "SECRET_KEY_BASE") == first
    assert api.versions("common", "SECRET_KEY_BASE") == [1]
    event = api.one_audit(r.headers["x-request-id"])
    assert event["action"] == "secret.generate" and event["outcome"] == "ok"
    assert "left unchanged" in event["reason"]


def test_generate_leaves_a_value_that_was_set_by_hand_alone(api: Api) -> None:
    mine = random_value()
    assert api.put("production", "API_KEY", mine).status_code == 200

    r = generate(api, "production", "API_KEY")

    assert r.json()["generated"] is False
    assert api.value("production", "API_KEY") == mine


def test_rotate_writes_a_new_version_and_keeps_the_history(api: Api) -> None:
    assert generate(api, "common", "SECRET_KEY_BASE").status_code == 200
    first = api.value("common", "SECRET_KEY_BASE")

    r = generate(api, "common", "SECRET_KEY_BASE", rotate=True)

    assert r.status_code == 200, r.text
    assert r.json()["generated"] is True and r.json()["rotated"] is True
    assert r.json()["secret"]["version"] == 2
    assert api.value("common", "SECRET_KEY_BASE") != first
    assert api.get("common", "SECRET_KEY_BASE", version=1).json()["value"] == first


def test_rotate_of_a_missing_secret_creates_it(api: Api) -> None:
    r = generate(api, "common", "FRESH", rotate=True)

    assert r.status_code == 200
    assert r.json()["generated"] is True and r.json()["rotated"] is False


def test_formats_carry_the_requested_randomness(api: Api) -> None:
    assert generate(api, "common", "B64", bytes=48, format="base64").status_code == 200
    assert len(base64.b64decode(api.value("common", "B64"), validate=True)) == 48
    assert generate(api, "common", "ALNUM", bytes=32, format="alnum").status_code == 200
    alnum = api.value("common", "ALNUM")
    assert len(alnum) == 43  # ceil(256 / log2(62)) characters hold at least 256 bits
    assert set(alnum) <= set(string.ascii_letters + string.digits)
    assert generate(api, "common", "HEX", bytes=16).status_code == 200
    assert len(api.value("common", "HEX")) == 32


def test_bad_requests_name_the_field(api: Api) -> None:
    for body, field in (
        ({"bytes": 15}, "bytes"),
        ({"bytes": 1025}, "bytes"),
        ({"format": "base32"}, "format"),
        ({"rotate": "yes"}, "rotate"),
        ({"value": "mine"}, "value"),
    ):
        r = generate(api, "common", "X", **body)
        assert field in problem(r, 400)["detail"], body
    assert problem(generate(api, "nowhere", "X"), 404)
    assert problem(generate(api, "common", "not-a-name"), 400)


def test_generate_needs_write(api: Api) -> None:
    reader = api.token_for([{"project": "microblog", "environments": "*", "actions": ["read"]}])

    r = generate(api, "common", "SECRET_KEY_BASE", headers=reader)

    assert problem(r, 403)
    assert api.client.get(api.url("common", "SECRET_KEY_BASE"), headers=api.h).status_code == 404


def test_concurrent_generates_store_exactly_one_value(api: Api) -> None:
    url = f"{api.url('common', 'SECRET_KEY_BASE')}/generate"

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api.client.app, raise_app_exceptions=True, client=CLIENT_ADDR)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as ac:
            return list(await asyncio.gather(*(ac.post(url, json={}, headers=api.h) for _ in range(12))))

    replies: list[httpx.Response] = api.run(go)

    assert {r.status_code for r in replies} == {200}
    assert sum(r.json()["generated"] for r in replies) == 1
    assert api.versions("common", "SECRET_KEY_BASE") == [1]
    for r in replies:
        assert api.one_audit(r.headers["x-request-id"])["action"] == "secret.generate"


def test_reveal_header_audits_the_read_as_a_reveal(api: Api) -> None:
    value = random_value()
    assert api.put("common", "DB_PASSWORD", value).status_code == 200

    plain = api.client.get(api.url("common", "DB_PASSWORD"), headers=api.h)
    shown = api.client.get(api.url("common", "DB_PASSWORD"), headers={**api.h, "X-Strongroom-Reveal": "1"})
    resolved = api.client.get(
        f"{api.env_url('production')}/resolved", headers={**api.h, "X-Strongroom-Reveal": "1"}
    )

    assert plain.json()["value"] == shown.json()["value"] == value
    assert api.one_audit(plain.headers["x-request-id"])["action"] == "secret.read"
    event = api.one_audit(shown.headers["x-request-id"])
    assert (event["action"], event["secret_name"], event["version"]) == ("secret.reveal", "DB_PASSWORD", 1)
    assert resolved.status_code == 200
    assert api.one_audit(resolved.headers["x-request-id"])["action"] == "secret.reveal"
