"""The web console: server-rendered pages over the same services, token check and scopes as the API.

Thin handlers only: each authenticates through `services.auth.authenticate`, calls the service its API
twin calls (so each look is audited under the same action), and renders a template. The edge middleware
records the event of any request no service recorded (the action comes from api/edge.py ROUTE_ACTIONS).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Scope

from broker.api.edge import ROUTE_ACTIONS
from broker.api.errors import STATUS
from broker.audit.checkpoint import PublicKey
from broker.console import security
from broker.domain import drift as drift_states
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action, allowed
from broker.errors import BrokerError, Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from broker.services import auth, projects
from broker.services import compile as compile_service
from broker.services import deploys as deploys_service
from broker.services import secrets as secrets_service
from broker.services.audit import export as audit_export
from broker.services.audit import search as audit_search
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.console")

MAX_FORM_FIELDS = 8
FILTERS = ("name", "project", "environment", "actor", "action", "outcome", "source", "since", "until")
PAGE_SIZE = 50

Handler = Callable[["Page"], Awaitable[Response]]


@dataclass
class Page:
    """One console request: the runtime, the request, its audit context and (once signed in) the caller."""

    rt: Runtime
    request: Request
    ctx: RequestContext
    actor: Actor | None = None
    form: dict[str, str] | None = None

    @property
    def who(self) -> Actor:
        """The signed-in caller (handlers that need a session get one)."""
        assert self.actor is not None
        return self.actor


def _templates() -> Environment:
    # Autoescape on for every template, whatever its name: every string a page shows may come from a caller.
    return Environment(
        loader=PackageLoader("broker.console", "templates"), autoescape=True, auto_reload=False
    )


_ENV = _templates()
_CSS = resources.files("broker.console").joinpath("static/console.css").read_bytes()


def _status_of(exc: BrokerError) -> int:
    for kind, status, _title in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


@dataclass(frozen=True)
class Nav:
    """Which groups of links the header shows a session: only pages its scopes may open (the pages
    themselves still check, as the API does; this only keeps an auditor's header free of operator links)."""

    audit: bool
    operator: bool
    admin: bool


def _nav(actor: Actor) -> Nav:
    operate = {Action.READ, Action.WRITE, Action.ADMIN}
    return Nav(
        audit=audit_search.is_auditor(actor),
        operator=any(not s.deny and s.actions & operate for s in actor.scopes),
        admin=allowed(actor.scopes, Action.ADMIN, None, None),
    )


def render(page: Page, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
    """A template rendered with the session's name, header links and CSRF token, behind the console's headers."""
    actor = page.actor
    csrf = security.csrf_token(page.rt, actor.accessor) if actor is not None else ""
    html = _ENV.get_template(template).render(
        who=actor.name if actor is not None else None,
        nav=_nav(actor) if actor is not None else None,
        csrf=csrf,
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    return response


def login_page(page: Page, *, status: int, message: str | None = None) -> Response:
    """The sign-in form, with a fresh double-submit value in a cookie and in the form."""
    from broker.console import sso  # sso builds its routes with this module

    page.actor = None
    nonce = security.login_nonce()
    response = render(page, "login.html", status=status, message=message, nonce=nonce, sso=sso.button(page))
    security.set_cookie(page.request, response, security.LOGIN_COOKIE, nonce, max_age=900)
    return response


def error_page(page: Page, exc: BrokerError, *, end_session: bool = True) -> Response:
    """The page for an error: its sentence (safe to show: it never quotes a value) and its status; the
    audit's reason is the sentence unless the refusal named one. A refused session ends (its cookie is
    cleared) unless `end_session` is False: a refusal that did not look at the session leaves it be."""
    if page.ctx.reason is None:
        page.ctx.reason = exc.message
    if isinstance(exc, Unauthenticated):
        response = login_page(page, status=401, message=exc.message)
        if end_session:
            security.clear_cookie(page.request, response, security.SESSION_COOKIE)
        return response
    status = _status_of(exc)
    response = render(page, "error.html", status=status, message=exc.message, status_code=status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if not body:
        return {}  # an empty form: its checks (CSRF first) then refuse it by name
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Invalid("body: must be a form (application/x-www-form-urlencoded)", field="body")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Invalid("body: not a form this console sent", field="body") from None
    return dict(pairs)


def endpoint(rt: Runtime, method: str, path: str, handler: Handler, *, session: bool = True) -> Route:
    """A console route: names its audit action, checks Origin and CSRF on POST, authenticates the
    session cookie through the API's own token check, and turns broker errors into pages."""
    action = ROUTE_ACTIONS[(method, security.PATH + path)]

    async def run(request: Request) -> Response:
        page = Page(rt, request, request.scope["state"]["ctx"])
        page.ctx.about(action)
        try:
            if method == "POST":
                security.check_origin(request)
                page.form = await _read_form(request)
            if session:
                authorization = security.bearer(request)
                if authorization is None:
                    # No cookie: nothing to check, so no failed attempt is counted against the address.
                    page.ctx.reason = "no console session"
                    return login_page(page, status=401)
                page.actor = await auth.authenticate(rt, page.ctx, authorization)
                if method == "POST":
                    assert page.form is not None
                    security.check_csrf(page.form.get("csrf"), security.csrf_token(rt, page.who.accessor))
            return await handler(page)
        except BrokerError as exc:
            return error_page(page, exc)
        except Exception as exc:
            # The type only: an exception's message may quote input (as in api/errors.py).
            log.error("console: unexpected %s (request %s)", type(exc).__name__, page.ctx.request_id)
            page.ctx.reason = f"internal error ({type(exc).__name__})"
            return render(page, "error.html", status=500, message="internal error", status_code=500)

    return Route(path, run, methods=[method])


# --- pages -------------------------------------------------------------------------------------------


async def show_login(page: Page) -> Response:
    """The sign-in form."""
    return login_page(page, status=200)


async def do_login(page: Page) -> Response:
    """Exchange client credentials for a short-lived broker token kept in the session cookie."""
    form = page.form or {}
    nonce = security.cookie(page.request, security.LOGIN_COOKIE)
    if not nonce:
        raise Forbidden("csrf: the sign-in form expired or was not sent by this console; reload it")
    security.check_csrf(form.get("nonce"), nonce)
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not client_secret:
        raise Invalid("client_id: both the client id and the client secret are needed", field="client_id")
    issued = await auth.exchange(
        page.rt, page.ctx, client_id=client_id, client_secret=client_secret, ttl=security.SESSION_TTL
    )
    lifetime = max(1, int((issued.info.expires_at - page.rt.clock()).total_seconds()))
    response = RedirectResponse(security.PATH + "/", status_code=303)
    security.set_cookie(page.request, response, security.SESSION_COOKIE, issued.token, max_age=lifetime)
    security.clear_cookie(page.request, response, security.LOGIN_COOKIE)
    return response


async def do_logout(page: Page) -> Response:
    """Revoke the session's token (and any children), then forget the cookie."""
    await auth.revoke_self(page.rt, page.ctx, page.who)
    response = RedirectResponse(security.PATH + "/login", status_code=303)
    security.clear_cookie(page.request, response, security.SESSION_COOKIE)
    return response


async def home(page: Page) -> Response:
    """Where a session starts: who is signed in and what the console offers."""
    expires = page.who.expires_at.isoformat(timespec="seconds") if page.who.expires_at else None
    return render(page, "home.html", expires=expires)


def _filters(request: Request) -> dict[str, str]:
    return {k: v for k in FILTERS if (v := request.query_params.get(k, "").strip())}


def _cursor(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise Invalid("cursor: must be a sequence number", field="cursor")
    return int(text)


async def trail(page: Page) -> Response:
    """The trail, filtered like `strongroom audit list`, one keyset page (by sequence) at a time."""
    filters = _filters(page.request)
    audit_search.require_auditor(page.ctx, page.who, "audit.list")
    try:
        query = audit_search.EventQuery(
            name=filters.get("name"),
            project=filters.get("project"),
            environment=filters.get("environment"),
            actor=filters.get("actor"),
            action=filters.get("action"),
            outcome=filters.get("outcome"),
            source=filters.get("source"),
            since=filters.get("since"),
            until=filters.get("until"),
            cursor=_cursor(page.request.query_params.get("cursor")),
            limit=PAGE_SIZE,
        )
        result = await audit_search.list_events(page.rt, page.ctx, page.who, query)
    except Invalid as exc:
        page.ctx.reason = exc.message
        return render(
            page, "trail.html", status=400, filters=filters, error=exc.message, events=[], next=None
        )
    following = (
        security.PATH + "/audit?" + urlencode({**filters, "cursor": str(result.next_cursor)})
        if result.next_cursor is not None
        else None
    )
    return render(
        page, "trail.html", filters=filters, events=result.events, next=following, head=result.head_seq
    )


async def event(page: Page) -> Response:
    """One event's full record (through the same search, so the same visibility rules)."""
    seq = _cursor(page.request.path_params.get("seq"))
    audit_search.require_auditor(page.ctx, page.who, "audit.list")
    assert seq is not None
    result = await audit_search.list_events(
        page.rt, page.ctx, page.who, audit_search.EventQuery(cursor=seq + 1, limit=1)
    )
    found = next((e for e in result.events if e.get("seq") == seq), None)
    if found is None:
        return render(page, "error.html", status=404, message=f"audit/{seq}: no such event", status_code=404)
    fields = [(k, v) for k, v in found.items() if k not in ("fingerprints", "scopes")]
    return render(
        page,
        "event.html",
        seq=seq,
        fields=fields,
        fingerprints=found.get("fingerprints") or [],
        scopes=found.get("scopes") or [],
    )


def _age(time_text: str, now: datetime) -> str:
    try:
        then = datetime.fromisoformat(time_text)
    except ValueError:
        return "unknown"
    seconds = max(0, int((now - then).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"


async def chain(page: Page) -> Response:
    """The chain's state: head, last signed checkpoint, its age and whether its signature verifies."""
    audit_search.require_auditor(page.ctx, page.who, "audit.status")
    st = await audit_export.status(page.rt, page.ctx, page.who)
    last = st.last_checkpoint
    checkpoint = None
    if last is not None:
        checkpoint = {
            "seq": last.seq,
            "head": last.checkpoint.head,
            "time": last.checkpoint.time,
            "age": _age(last.checkpoint.time, page.rt.clock()),
            "valid": PublicKey.from_pem(st.public_key_pem.encode("ascii")).verifies(last),
        }
    return render(page, "chain.html", st=st, checkpoint=checkpoint)


async def fingerprint_form(page: Page) -> Response:
    """The form for "was this value ever served?" (auditors only, as its answer is)."""
    audit_search.require_auditor(page.ctx, page.who, "audit.fingerprint")
    return render(page, "fingerprint.html", result=None)


async def fingerprint(page: Page) -> Response:
    """Look a candidate value up by its fingerprint; the value is never echoed, kept or logged."""
    audit_search.require_auditor(page.ctx, page.who, "audit.fingerprint")
    value = (page.form or {}).get("value", "")
    if value == "" or len(value) > 65536:
        raise Invalid("value: type the value to look up (at most 65536 characters)", field="value")
    found = await audit_search.fingerprint_search(page.rt, page.ctx, page.who, value=value)
    result = {
        "fingerprint": str(found.extra["fingerprint"]),
        "events": found.events,
        "more": found.next_cursor is not None,
    }
    return render(page, "fingerprint.html", result=result)


async def export(page: Page) -> Response:
    """Download an export (the API's export service) for `strongroom audit verify`."""
    audit_search.require_auditor(page.ctx, page.who, "audit.export")
    params = page.request.query_params
    fmt = params.get("format") or "jsonl"
    plan = await audit_export.plan_export(
        page.rt,
        page.ctx,
        page.who,
        since=params.get("since") or None,
        until=params.get("until") or None,
        fmt=fmt,
    )
    media = "text/csv" if plan.fmt == "csv" else "application/x-ndjson"
    response = StreamingResponse(
        audit_export.export_lines(page.rt, plan),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="strongroom-audit-{plan.low}-{plan.high}.{plan.fmt}"'
        },
    )
    return response


async def tokens(page: Page) -> Response:
    """Tokens by accessor, newest first (admin, like GET /v1/tokens), each with a revoke button."""
    infos = await auth.list_tokens(page.rt, page.ctx, page.who, include_inactive=False, limit=200)
    return render(page, "tokens.html", tokens=infos, mine=page.who.accessor)


async def revoke(page: Page) -> Response:
    """Revoke a token and its children by accessor (admin, like POST /v1/tokens/revoke)."""
    accessor = (page.form or {}).get("accessor", "")
    await auth.revoke_accessor(page.rt, page.ctx, page.who, accessor=accessor)
    response = RedirectResponse(security.PATH + "/tokens", status_code=303)
    return response


async def project_list(page: Page) -> Response:
    """The projects the caller holds any scope on (like GET /v1/projects)."""
    found = await projects.list_projects(page.rt, page.ctx, page.who)
    return render(page, "projects.html", projects=found)


def _tree(envs: list[projects.EnvironmentView]) -> list[tuple[int, projects.EnvironmentView]]:
    """Environments in inheritance order, each with its depth (a parent the caller cannot see is a root)."""
    slugs = {e.slug for e in envs}
    children: dict[str | None, list[projects.EnvironmentView]] = {}
    for env in envs:
        children.setdefault(env.parent if env.parent in slugs else None, []).append(env)
    out: list[tuple[int, projects.EnvironmentView]] = []

    def walk(parent: str | None, depth: int) -> None:
        for env in sorted(children.get(parent, []), key=lambda e: e.slug):
            out.append((depth, env))
            walk(env.slug, depth + 1)

    walk(None, 0)
    return out


async def environment_tree(page: Page) -> Response:
    """A project's environments drawn as their inheritance tree (like GET .../environments)."""
    project = page.request.path_params["project"]
    envs = await projects.list_environments(page.rt, page.ctx, page.who, project=project)
    return render(page, "environments.html", project=project, tree=_tree(envs))


async def secret_list(page: Page) -> Response:
    """An environment's own secrets: names, versions, origins and metadata; values stay masked."""
    project, environment = page.request.path_params["project"], page.request.path_params["environment"]
    found = await secrets_service.list_secrets(
        page.rt, page.ctx, page.who, project=project, environment=environment, include_deleted=False
    )
    return render(page, "secrets.html", project=project, environment=environment, secrets=found)


async def reveal(page: Page) -> Response:
    """Show one value, on an explicit POST; read through the API's one read path, audited as a reveal."""
    params = page.request.path_params
    got = await secrets_service.read_secret(
        page.rt,
        page.ctx,
        authorization=security.bearer(page.request),
        project=params["project"],
        environment=params["environment"],
        name=params["name"],
        version=None,
        reveal=True,
    )
    return render(
        page,
        "reveal.html",
        project=params["project"],
        environment=params["environment"],
        secret=got,
        value=got.value.reveal(),
    )


async def environment_diff(page: Page) -> Response:
    """Two environments compared by name and by value fingerprint (like GET .../diff; never a value)."""
    project = page.request.path_params["project"]
    a, b = page.request.query_params.get("a", ""), page.request.query_params.get("b", "")
    if not a or not b:
        raise Invalid("a: name the two environments to compare (a and b)", field="a")
    diff = await compile_service.diff_environments(page.rt, page.ctx, page.who, project=project, a=a, b=b)
    return render(page, "diff.html", project=project, a=a, b=b, diff=diff)


def _scope_text(scope: Any) -> str:
    data = scope.to_json()
    text = f"{data['project']}:{data['environments']}:{','.join(data['actions'])}"
    if data.get("keys"):
        text += ":" + ",".join(data["keys"])
    return ("deny " if data.get("deny") else "") + text


async def identity_list(page: Page) -> Response:
    """Every identity with its scopes and token lifetimes (admin, like GET /v1/identities)."""
    found = await auth.list_identities(page.rt, page.ctx, page.who)
    rows = [(i, [_scope_text(sc) for sc in i.scopes]) for i in found]
    return render(page, "identities.html", identities=rows)


async def deploy_list(page: Page) -> Response:
    """An environment's deploy ledger, newest first (like GET .../deploys)."""
    project, environment = page.request.path_params["project"], page.request.path_params["environment"]
    found = await deploys_service.list_deploys(
        page.rt, page.ctx, page.who, project=project, environment=environment, limit=50
    )
    return render(page, "deploys.html", project=project, environment=environment, deploys=found)


async def deploy_detail(page: Page) -> Response:
    """One deploy: each host's outcome and which secret versions (by fingerprint) run where."""
    got = await deploys_service.get_deploy(
        page.rt, page.ctx, page.who, deploy_id=page.request.path_params["deploy_id"]
    )
    return render(page, "deploy.html", d=got.deploy, hosts=got.hosts, host_keys=got.host_keys)


MANIFEST_MAX = 262144


def _row(entry: deploys_service.LedgerEntry | None) -> drift_states.Row | None:
    if entry is None:
        return None
    r = entry.record
    return drift_states.Row(entry.deploy_id, entry.version, r.env_fingerprint, r.outcome, r.error)


def _verdict(h: deploys_service.HostStatus) -> drift_states.Verdict:
    """The ledger-only verdict of `strongroom deploy status --ledger-only` (the one mapping, domain/drift.py)."""
    ledger = drift_states.Ledger(
        last=_row(h.last),
        expected_env_fingerprint=h.expected_env_fingerprint,
        rotated=tuple(
            drift_states.Rotation(r.name, r.deployed_version, r.current_version) for r in h.rotated
        ),
        attempt=_row(h.attempt),
        behind=_row(h.behind),
    )
    return drift_states.judge(ledger)


async def _drift(page: Page, manifest: str | None, source: str) -> Response:
    project, environment = page.request.path_params["project"], page.request.path_params["environment"]
    found = await deploys_service.status(
        page.rt, page.ctx, page.who, project=project, environment=environment, manifest=manifest
    )
    rows = [(h, _verdict(h)) for h in found]
    return render(
        page, "drift.html", project=project, environment=environment, rows=rows, source=source, error=None
    )


async def drift(page: Page) -> Response:
    """Each host's drift state against the manifest of the environment's newest deploy (like `deploy status`)."""
    try:
        return await _drift(page, None, "the manifest of the newest deploy")
    except NotFound as exc:
        if "no deploy yet" not in exc.message:
            raise
        page.ctx.reason = exc.message
        params = page.request.path_params
        return render(
            page,
            "drift.html",
            project=params["project"],
            environment=params["environment"],
            rows=None,
            source=None,
            error=exc.message,
        )


async def drift_with(page: Page) -> Response:
    """Each host's drift state against a pasted strongroom.yml (by POST; the text is never echoed back)."""
    manifest = (page.form or {}).get("manifest", "")
    if not manifest.strip() or len(manifest) > MANIFEST_MAX:
        raise Invalid(
            f"manifest: paste the service's strongroom.yml (at most {MANIFEST_MAX} characters)",
            field="manifest",
        )
    return await _drift(page, manifest, "the manifest you pasted")


async def stylesheet(_page: Page) -> Response:
    """The console's one stylesheet, from the package."""
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


class ConsoleMount(Mount):
    """The console's mount. A plain Mount takes only `/console/...`, so `/console` itself fell through to the
    API's JSON 404; this one takes it too, and the console's router answers it with a redirect to `/console/`
    (Starlette's slash redirect: no route of the console matches the empty path, its home matches "/")."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """The mount's own path exactly, else what a Mount matches."""
        root = scope.get("root_path", "")
        if scope["type"] == "http" and scope["path"] == root + self.path:
            return Match.FULL, {
                "path_params": dict(scope.get("path_params", {})),
                "app_root_path": scope.get("app_root_path", root),
                "root_path": root + self.path,
                "endpoint": self.app,
            }
        return super().matches(scope)


def mount(rt: Runtime) -> Mount:
    """The console, mounted at /console (create_app adds it to the application's routes)."""
    return ConsoleMount(security.PATH, app=build(rt))


def build(rt: Runtime) -> ASGIApp:
    """The console application, mounted by create_app at /console."""
    routes = [
        endpoint(rt, "GET", "/login", show_login, session=False),
        endpoint(rt, "POST", "/login", do_login, session=False),
        endpoint(rt, "POST", "/logout", do_logout),
        endpoint(rt, "GET", "/", home),
        endpoint(rt, "GET", "/audit", trail),
        endpoint(rt, "GET", "/audit/events/{seq}", event),
        endpoint(rt, "GET", "/audit/chain", chain),
        endpoint(rt, "GET", "/audit/fingerprint", fingerprint_form),
        endpoint(rt, "POST", "/audit/fingerprint", fingerprint),
        endpoint(rt, "GET", "/audit/export", export),
        endpoint(rt, "GET", "/projects", project_list),
        endpoint(rt, "GET", "/projects/{project}", environment_tree),
        endpoint(rt, "GET", "/projects/{project}/environments/{environment}", secret_list),
        endpoint(rt, "POST", "/projects/{project}/environments/{environment}/secrets/{name}/reveal", reveal),
        endpoint(rt, "GET", "/projects/{project}/diff", environment_diff),
        endpoint(rt, "GET", "/projects/{project}/environments/{environment}/deploys", deploy_list),
        endpoint(rt, "GET", "/projects/{project}/environments/{environment}/deploys/status", drift),
        endpoint(rt, "POST", "/projects/{project}/environments/{environment}/deploys/status", drift_with),
        endpoint(rt, "GET", "/deploys/{deploy_id}", deploy_detail),
        endpoint(rt, "GET", "/identities", identity_list),
        endpoint(rt, "GET", "/tokens", tokens),
        endpoint(rt, "POST", "/tokens/revoke", revoke),
        endpoint(rt, "GET", "/static/console.css", stylesheet, session=False),
    ]
    from broker.console import sso  # it builds its routes with this module's endpoint()

    routes += sso.routes(rt)
    return security.Headers(Starlette(routes=routes))
