"""Console sign-in with an OpenID provider: the "Sign in with ..." link and the provider's callback.

The flow (state, nonce, PKCE, the code exchange, the ID token's verification, the mapping of its claims
to a console role, the audit) lives in broker.services.oidc; here are the two routes and the cookies.

The pre-login cookie binds a sign-in to the browser that started it. It is SameSite=Lax, not Strict
like the session cookie: the provider sends the browser back with a cross-site top-level GET, and a
Strict cookie would not come with it. For the same reason the callback answers with a page that moves
on to the console by itself (a meta refresh, no script): a redirect would continue the cross-site
navigation, and the browser would withhold the new Strict session cookie from the console's first page.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.console import app, security
from broker.errors import BrokerError
from broker.services import oidc
from broker.services.runtime import Runtime

COOKIE = "strongroom_console_sso"
_PAGE = re.compile(r"/console/[A-Za-z0-9/_.~-]{0,240}")
COOKIE_PATH = security.PATH + "/sso"


def _clear(page: app.Page, response: Response) -> None:
    security.clear_cookie(page.request, response, COOKIE, path=COOKIE_PATH, samesite="lax")


def next_page(path: str | None) -> str:
    """The console page to open after signing in: `path` when it is one of the console's own pages
    (never another site, never the sign-in routes), else the console's home."""
    home = security.PATH + "/"
    if (
        path is None
        or not _PAGE.fullmatch(path)
        or "//" in path
        or "/./" in path + "/"
        or "/../" in path + "/"
        or path.startswith((security.PATH + "/sso", security.PATH + "/login"))
    ):
        return home
    return path


def button(page: app.Page) -> dict[str, str] | None:
    """The login page's "Sign in with ..." link (coming back to the page asked for), or None."""
    label = oidc.sso_label(page.rt)
    if label is None:
        return None
    here = next_page(page.request.url.path)
    query = "" if here == security.PATH + "/" else "?" + urlencode({"next": here})
    return {"label": label, "href": f"{security.PATH}/sso/start{query}"}


async def start(page: app.Page) -> Response:
    """Send the browser to the provider, with a fresh sign-in bound to it by the pre-login cookie."""
    begun = await oidc.sso_begin(
        page.rt, page.ctx, next_path=next_page(page.request.query_params.get("next"))
    )
    response = RedirectResponse(begun.url, status_code=303)
    security.set_cookie(
        page.request,
        response,
        COOKIE,
        begun.cookie,
        max_age=oidc.SSO_WINDOW,
        path=COOKIE_PATH,
        samesite="lax",  # the provider's redirect back is a cross-site GET (see the module's docstring)
    )
    return response


async def callback(page: app.Page) -> Response:
    """The provider's answer: a session for the mapped role, or the sign-in page saying why not.

    A refusal leaves the browser's session cookie alone: any page can send a browser here (a cross-site
    GET), and it must not be able to sign a person out. So does a request that is not for a page (an
    image, a script: `Sec-Fetch-Dest` other than `document`), refused before anything is looked at."""
    try:
        dest = page.request.headers.get("sec-fetch-dest")
        if dest is not None and dest != "document":
            raise oidc.refuse_sign_in(
                page.ctx,
                "the callback was not opened as a page",
                "Sec-Fetch-Dest: the sign-in answer opens only as a page; start again from the sign-in page",
            )
        done = await oidc.sso_finish(
            page.rt,
            page.ctx,
            cookie=security.cookie(page.request, COOKIE),
            params=dict(page.request.query_params),
            max_ttl=security.SESSION_TTL,
        )
    except BrokerError as exc:
        # The pre-login cookie stays: a forged answer (a state that is not ours) must not end the sign-in
        # under way, and once used the cookie opens nothing (the sign-in is registered as used).
        return app.error_page(page, exc, end_session=False)
    issued = done.issued
    lifetime = max(1, int((issued.info.expires_at - page.rt.clock()).total_seconds()))
    response = app.render(page, "sso_done.html", target=next_page(done.next_path))
    security.set_cookie(page.request, response, security.SESSION_COOKIE, issued.token, max_age=lifetime)
    _clear(page, response)
    return response


def routes(rt: Runtime) -> list[Route]:
    """The two routes, registered by the console's app."""
    return [
        app.endpoint(rt, "GET", "/sso/start", start, session=False),
        app.endpoint(rt, "GET", "/sso/callback", callback, session=False),
    ]
