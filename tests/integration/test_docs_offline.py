"""`/docs` works offline: Swagger UI comes from the installed package, and the page names no other origin."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.api.docs import ASSETS, bundle_dir
from broker.main import build_runtime, create_app
from tests.conftest import make_settings, sqlite_db


class _Refs(HTMLParser):
    """Every URL-bearing attribute of the page (src, href, action, data-*-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (name in {"src", "href", "action"} or name.endswith("-url")):
                self.refs.append(value)


@pytest.fixture
def docs_client(tmp_path: Path, sqlite_template: Path) -> Iterator[TestClient]:
    url = sqlite_db(tmp_path / "broker.db", sqlite_template)
    with TestClient(
        create_app(build_runtime(make_settings(url, tmp_path))), client=("127.0.0.1", 50000)
    ) as c:
        yield c


def test_the_page_references_only_its_own_assets(docs_client: TestClient) -> None:
    r = docs_client.get("/docs")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "the page references its assets"
    for ref in parser.refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!doctype", "")
    assert "/openapi.json" in parser.refs
    # The browser is told the same: nothing from another origin.
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http" not in csp and "*" not in csp


def test_every_asset_is_served_from_the_package(docs_client: TestClient) -> None:
    parser = _Refs()
    parser.feed(docs_client.get("/docs").text)
    served = set()
    for ref in parser.refs:
        if not ref.startswith("/docs?asset="):
            continue
        r = docs_client.get(ref)
        assert r.status_code == 200, ref
        name = ref.removeprefix("/docs?asset=").split("&")[0]
        served.add(name)
        if name in ASSETS:
            assert r.content == (bundle_dir() / name).read_bytes()
            assert r.headers["content-type"] == ASSETS[name]
    assert served == {*ASSETS, "init.js"}
    init = docs_client.get("/docs?asset=init.js").text
    # No validator badge: Swagger UI would send the schema to a third-party service for it.
    assert "validatorUrl: null" in init
    assert "http" not in init


def test_the_bundle_is_a_current_swagger_ui(docs_client: TestClient) -> None:
    major = int(bundle_dir().name.removeprefix("swagger-ui-").split(".")[0])
    assert major >= 5
    assert docs_client.get("/openapi.json").status_code == 200
    assert docs_client.get("/docs/oauth2-redirect").status_code == 200
    assert docs_client.head("/docs").status_code == 200


@pytest.mark.parametrize("asset", ["../../../pyproject.toml", "swagger-initializer.js", "index.html", ""])
def test_only_the_named_assets_are_reachable(docs_client: TestClient, asset: str) -> None:
    r = docs_client.get("/docs", params={"asset": asset})

    assert r.status_code == 404
    assert "asset: no docs asset named" in r.text
    assert "petstore" not in r.text
