"""The API docs page (`/docs`): Swagger UI from the installed `swagger-ui-bundle-v2` package, served by the
broker itself, so the page works offline and loads nothing from another origin.

The page and its assets share the one `/docs` route (`/docs?asset=NAME`), so the audit's route table and
the default-deny allow-list stay as they are; only the files named in `ASSETS` are ever served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

# The bundle's files the page needs, and their media types; nothing else in the package is reachable.
ASSETS: Final = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
INIT: Final = "init.js"
# Same-origin only: a script, style or connection to any other origin is refused by the browser.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def bundle_dir() -> Path:
    """The installed Swagger UI's directory (the package's `vendor/swagger-ui-VERSION`)."""
    from importlib.resources import files

    vendor = Path(str(files("swagger_ui_bundle") / "vendor"))
    found = sorted(vendor.glob("swagger-ui-*"))
    if len(found) != 1:
        raise RuntimeError(f"{vendor}: expected one swagger-ui-VERSION directory, found {len(found)}")
    return found[0]


def _asset_url(name: str, version: str) -> str:
    # The bundle's version in the URL lets browsers cache an asset until the package changes.
    return f"/docs?asset={name}&amp;v={version}"


def _page(openapi_url: str, title: str) -> str:
    version = bundle_dir().name.removeprefix("swagger-ui-")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="icon" type="image/png" href="{_asset_url("favicon-32x32.png", version)}">
<link rel="stylesheet" href="{_asset_url("swagger-ui.css", version)}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{_asset_url("swagger-ui-bundle.js", version)}"></script>
<script src="{_asset_url(INIT, version)}"></script>
</body>
</html>
"""


# No validator: Swagger UI would otherwise send the schema to a third-party validation service.
_INIT_JS: Final = """window.onload = function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    oauth2RedirectUrl: window.location.origin + "/docs/oauth2-redirect"
  });
};
"""


def docs_endpoint(openapi_url: str, title: str) -> Callable[[Request], Awaitable[Response]]:
    """The `/docs` handler: the page, or one of its assets when `?asset=NAME` names one."""
    page = _page(openapi_url, title)
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    cached = {**headers, "Cache-Control": "public, max-age=86400"}

    async def docs(request: Request) -> Response:
        asset = request.query_params.get("asset")
        if asset is None:
            return HTMLResponse(page, headers={**headers, "Cache-Control": "no-cache"})
        if asset == INIT:
            return Response(_INIT_JS, media_type="text/javascript; charset=utf-8", headers=cached)
        if asset in ASSETS:
            return FileResponse(bundle_dir() / asset, media_type=ASSETS[asset], headers=cached)
        return PlainTextResponse(
            f"asset: no docs asset named {asset[:64]!r}; the page uses {', '.join([*ASSETS, INIT])}",
            status_code=404,
            headers=headers,
        )

    return docs


async def oauth2_redirect(request: Request) -> Response:
    """Swagger UI's OAuth2 redirect page (FastAPI's, which is self-contained)."""
    from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html

    return get_swagger_ui_oauth2_redirect_html()
