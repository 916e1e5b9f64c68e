"""The route class every router uses: FastAPI's route with its per-request parameter handling planned once.

FastAPI (0.165) re-inspects every parameter's annotation on every request (`request_params_to_args`
asks each field whether it is a sequence, a model, which aliases it has) and walks the dependency tree
generically. A `LeanRoute` works that out once, when the route is built: for each path, query and
header parameter its request key, whether it is a list and how it is validated (FastAPI's own field
validation, so values and error entries are the same), and for each dependency its callable and
cache key. A request then only looks values up and validates them.

The plan covers what the broker's routes use: `async def` dependencies (functions or security scheme
objects) taking parameters, the `Request` and other dependencies; scalar or list parameters; one JSON
body model (read and validated as FastAPI does: the same content-type rule, the same errors). A route
outside that (a form, several or embedded body fields, a cookie, a generator dependency, background
tasks, streaming) keeps FastAPI's handler; a `Response` parameter gets the same temporary response whose
status and headers FastAPI copies onto the answer, and so does every request while the app has a
dependency override (tests) or OpenTelemetry is recording: behaviour and the OpenAPI document are
FastAPI's either way.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine, Mapping
from copy import deepcopy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import params
from fastapi._body_limit import get_body_limit_error
from fastapi._compat import ModelField
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi._compat.v2 import get_missing_field_error
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant, _get_cache_key, _is_coroutine_callable
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _validate_value_with_model_field,
)
from fastapi.exceptions import RequestValidationError
from fastapi.routing import (
    APIRoute,
    _effective_route_context_var,
    _extract_endpoint_context,
    serialize_response,
)
from fastapi.telemetry._api import _get_request_telemetry, _validation_failed
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette.datastructures import Headers, ImmutableMultiDict
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


@dataclass(frozen=True, slots=True)
class _Param:
    """One path, query or header parameter: where to find it and how to validate it."""

    field: ModelField
    name: str
    keys: tuple[str, ...]  # request keys in FastAPI's order of preference
    location: str  # "path", "query" or "header": the first element of an error's loc
    many: bool  # a list read with getlist (repeated query keys or headers)
    sequence: bool  # an empty list counts as absent
    required: bool
    default: Any
    copy_default: bool
    validate_default: bool
    # A `str` with no constraint: validating a str returns it unchanged, so a str is taken as it is.
    plain_str: bool = False

    def value(self, source: Mapping[str, Any], values: dict[str, Any], errors: list[Any]) -> None:
        """Validate this parameter from `source` into `values`, or add its errors."""
        key = self.keys[0]
        if len(self.keys) > 1:
            key = next((k for k in self.keys if k in source), key)
        if self.many and isinstance(source, (ImmutableMultiDict, Headers)):
            raw: Any = source.getlist(key)
        else:
            raw = source.get(key)
            if self.plain_str and type(raw) is str:
                values[self.name] = raw
                return
        loc = (self.location, key)
        if raw is None or (self.sequence and len(raw) == 0):
            if self.required:
                errors.append(get_missing_field_error(loc=loc))
                return
            raw = deepcopy(self.default) if self.copy_default else self.default
            if not self.validate_default:
                values[self.name] = raw
                return
        got, errs = self.field.validate(raw, values, loc=loc)
        if errs:
            errors.extend(errs)
        else:
            values[self.name] = got


def _param(field: ModelField) -> _Param | None:
    info = field.field_info
    if _get_param_model(field) is not None or not isinstance(info, params.Param):
        return None
    sequence = field_annotation_is_sequence(info.annotation)
    default = field.default
    return _Param(
        field=field,
        name=field.name,
        keys=tuple(request_key for _, request_key in _get_param_aliases(field)),
        location=info.in_.value,
        many=sequence and not _is_json_field(field),
        sequence=sequence,
        required=info.is_required(),
        default=default,
        copy_default=not isinstance(default, _IMMUTABLE) and default is not PydanticUndefined,
        validate_default=bool(info.validate_default),
        plain_str=info.annotation is str and not info.metadata and not sequence,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """A dependant's parameters and sub-dependencies, resolved once."""

    call: Callable[..., Any] | None
    name: str | None
    cache_key: Any
    use_cache: bool
    path: tuple[_Param, ...]
    query: tuple[_Param, ...]
    header: tuple[_Param, ...]
    request_names: tuple[str, ...]
    response_name: str | None
    subs: tuple[_Plan, ...]
    body: ModelField | None = None

    @property
    def uses_response(self) -> bool:
        """Whether this dependant or one below takes a `Response` parameter."""
        return self.response_name is not None or any(sub.uses_response for sub in self.subs)

    async def solve(
        self,
        request: Request,
        cache: dict[Any, Any],
        errors: list[Any],
        body: Any = PydanticUndefined,
        response: Response | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of this dependant's call (errors collected as FastAPI collects them)."""
        values: dict[str, Any] = {}
        for sub in self.subs:
            before = len(errors)
            sub_values = await sub.solve(request, cache, errors, response=response)
            if len(errors) != before:
                continue
            if sub.use_cache and sub.cache_key in cache:
                solved = cache[sub.cache_key]
            else:
                assert sub.call is not None
                solved = await sub.call(**sub_values)
            if sub.name is not None:
                values[sub.name] = solved
            cache.setdefault(sub.cache_key, solved)
        if self.path:
            source: Mapping[str, Any] = request.path_params
            for p in self.path:
                p.value(source, values, errors)
        if self.query:
            source = request.query_params
            for p in self.query:
                p.value(source, values, errors)
        if self.header:
            source = request.headers
            for p in self.header:
                p.value(source, values, errors)
        if self.body is not None:
            got, errs = _validate_value_with_model_field(
                field=self.body, value=body, values=values, loc=("body",)
            )
            errors.extend(errs)
            values[self.body.name] = got
        for name in self.request_names:
            values[name] = request
        if self.response_name is not None:
            values[self.response_name] = response
        return values


def _plan(dependant: Dependant, *, top: bool, body: ModelField | None = None) -> _Plan | None:
    """The plan for a dependant, or None when it uses something the plan does not cover."""
    if (
        dependant.cookie_params
        or (dependant.body_params and (body is None or dependant.body_params != [body]))
        or dependant.websocket_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.concurrency is not None
        or dependant.call is None
        or not _is_coroutine_callable(dependant.call)
    ):
        return None
    found: list[list[_Param]] = [[], [], []]
    for i, fields in enumerate((dependant.path_params, dependant.query_params, dependant.header_params)):
        for field in fields:
            p = _param(field)
            if p is None:
                return None
            found[i].append(p)
    subs = []
    for sub in dependant.dependencies:
        planned = _plan(sub, top=False)
        if planned is None:
            return None
        subs.append(planned)
    return _Plan(
        call=dependant.call,
        name=dependant.name,
        cache_key=None if top else _get_cache_key(dependant=dependant),
        use_cache=dependant.use_cache,
        path=tuple(found[0]),
        query=tuple(found[1]),
        header=tuple(found[2]),
        request_names=tuple(
            n for n in (dependant.request_param_name, dependant.http_connection_param_name) if n
        ),
        response_name=dependant.response_param_name,
        subs=tuple(subs),
        body=body,
    )


class LeanRoute(APIRoute):
    """An APIRoute whose parameters and dependencies are planned when it is built (see the module doc)."""

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, or the planned one when the route's parameters allow it."""
        stock = super().get_route_handler()
        route = _effective(self)
        if route.stream_item_field is not None or route.is_json_stream or route.is_sse_stream:
            return stock
        body = route.body_field
        if body is not None and (
            route._embed_body_fields
            or len(route.dependant.body_params) != 1
            or isinstance(body.field_info, params.Form)
        ):
            return stock
        plan = _plan(route.dependant, top=True, body=route.dependant.body_params[0] if body else None)
        if plan is None:
            return stock
        return _lean_handler(route, plan, stock)


def _effective(route: APIRoute) -> Any:
    # An included router's route is built again for each inclusion, with the including app's
    # dependency overrides and response defaults: FastAPI passes that context in a context variable.
    context = _effective_route_context_var.get()
    return context if context is not None and context.original_route is route else route


def _lean_handler(route: Any, plan: _Plan, stock: Handler) -> Handler:
    call = route.dependant.call
    overrides = route.dependency_overrides_provider
    status_code: int | None = route.status_code
    response_class = route.response_class
    concrete_class = (
        response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    )
    response_field = route.response_field
    dump_json = response_field is not None and isinstance(response_class, DefaultPlaceholder)
    response_args: dict[str, Any] = {"background": None}
    if status_code:
        response_args["status_code"] = status_code
    endpoint_ctx = _extract_endpoint_context(call)
    uses_response = plan.uses_response
    strict = route.strict_content_type
    strict = bool(strict.value if isinstance(strict, DefaultPlaceholder) else strict)

    def located(request: Request) -> Any:
        ctx = dict(endpoint_ctx)
        if route.dependant.path:
            mount = request.scope.get("root_path", "").rstrip("/")
            ctx["path"] = f"{request.method} {mount}{route.dependant.path}"
        return ctx

    async def handler(request: Request) -> Response:
        if (overrides is not None and overrides.dependency_overrides) or _get_request_telemetry() is not None:
            return await stock(request)
        body = await _json_body(request, strict, located) if plan.body is not None else PydanticUndefined
        errors: list[Any] = []
        sub_response: Response | None = None
        if uses_response:
            # FastAPI's temporary response: no content-length, no status until an endpoint sets one.
            sub_response = Response()
            del sub_response.headers["content-length"]
            sub_response.status_code = None  # type: ignore[assignment]
        values = await plan.solve(request, {}, errors, body, sub_response)
        if errors:
            failure = RequestValidationError(
                errors,
                body=None if body is PydanticUndefined else body,
                endpoint_ctx=located(request),
            )
            _validation_failed(failure)
            raise failure
        raw = await call(**values)
        if isinstance(raw, Response):
            return raw
        content = await serialize_response(
            field=response_field,
            response_content=raw,
            include=route.response_model_include,
            exclude=route.response_model_exclude,
            by_alias=route.response_model_by_alias,
            exclude_unset=route.response_model_exclude_unset,
            exclude_defaults=route.response_model_exclude_defaults,
            exclude_none=route.response_model_exclude_none,
            is_coroutine=True,
            endpoint_ctx=endpoint_ctx,
            dump_json=dump_json,
        )
        args = response_args
        if sub_response is not None and sub_response.status_code:
            args = {**response_args, "status_code": sub_response.status_code}
        if dump_json:
            response = Response(content=content, media_type="application/json", **args)
        else:
            response = concrete_class(content, **args)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        if sub_response is not None:
            response.headers.raw.extend(sub_response.headers.raw)
        return response

    return handler


@lru_cache(maxsize=64)
def _is_json_type(content_type: str) -> bool:
    # FastAPI's rule, parsed once per distinct header value.
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def _json_body(request: Request, strict: bool, located: Callable[[Request], Any]) -> Any:
    """The request body as FastAPI reads it for a JSON body parameter: parsed JSON, the raw bytes when the
    content type is not JSON (validation then refuses them), or nothing for an empty body."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if (not content_type and not strict) or (content_type and _is_json_type(content_type)):
            return await request.json()
        return raw
    except json.JSONDecodeError as e:
        failure = RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", e.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": e.msg},
                }
            ],
            body=e.doc,
            endpoint_ctx=located(request),
        )
        _validation_failed(failure)
        raise failure from e
    except HTTPException:
        raise
    except Exception as e:
        if MAX_BODY_SIZE_SCOPE_KEY in request.scope and (error := get_body_limit_error(e)):
            raise error from e
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from e
