"""Catalogue 62 for manifests: an unknown key in strongroom.yml sent to the compile and check routes reaches
the 400 body and the audit record only as a bounded plain name (at most 64 characters of [A-Za-z0-9_.-]);
any other key is described by its position. Read back from the real audit rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.compile.conftest import rails_manifest
from tests.integration.secrets.conftest import Api, problem

HOSTILE = {
    "long canary": "CANARY_" + "k9" * 100,
    "control characters": "evil\x1b[2J\x1b[31m\r\n\u2028\x9bname",
    "JSON fragment": '"},{"outcome":"ok","reason":"forged',
}
ROUTES = ("compile", "check")


def with_key(key: str) -> str:
    """The Rails manifest with `key` (written as a YAML double-quoted key) first under roles/web."""
    manifest = rails_manifest()
    assert manifest.count("  web:\n    hosts:\n") == 1
    return manifest.replace("  web:\n    hosts:\n", f"  web:\n    {json.dumps(key)}: 1\n    hosts:\n")


def refused(api: Api, route: str, manifest: str) -> tuple[str, dict[str, Any]]:
    """The 400's detail and the request's audit record."""
    r = api.client.post(
        f"{api.env_url('production')}/{route}",
        json={"manifest": manifest, "targets": ["kamal"]},
        headers=api.h,
    )
    detail = str(problem(r, 400)["detail"])
    return detail, api.one_audit(r.headers["x-request-id"])


def carries(event: dict[str, Any], text: str) -> bool:
    """Whether any column of the record holds the text, or any 16-character slice of it."""
    fields = " ".join(str(v) for v in event.values())
    return any(text[i : i + 16] in fields for i in range(max(1, len(text) - 15)))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unknown_key_that_is_not_plain_is_described_by_position(api: Api, route: str, case: str) -> None:
    key = HOSTILE[case]
    detail, event = refused(api, route, with_key(key))
    assert "roles/web/(key 1 of 2, its name not shown): unknown key" in detail
    assert not carries({"detail": detail}, key) and not carries(event, key)
    assert "\x1b" not in detail and "\r" not in detail and "\n" not in detail
    assert "roles/web/(key 1 of 2, its name not shown): unknown key" in str(event["reason"])


@pytest.mark.parametrize("route", ROUTES)
def test_a_misspelled_plain_key_is_still_named(api: Api, route: str) -> None:
    detail, event = refused(api, route, with_key("hostz"))
    expected = "roles/web/hostz: unknown key (expected one of: cmd, env, hosts, options, proxy) (line 11)"
    assert expected in detail and expected in str(event["reason"])


def test_a_duplicate_key_that_is_not_plain_is_not_shown(api: Api) -> None:
    key = HOSTILE["long canary"]
    manifest = rails_manifest() + f"{json.dumps(key)}: 1\n{json.dumps(key)}: 2\n"
    detail, event = refused(api, "check", manifest)
    assert "(a key not shown): duplicate key" in detail
    assert not carries({"detail": detail}, key) and not carries(event, key)
