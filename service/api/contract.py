"""The HTTP contract: one :class:`Route` per operation declares its method, path, operationId,
scope, parameters, body and answers. From the routes come the aiohttp route table
(:func:`add_routes`), the structural validation of every request (JSON Schema, with the
``jsonschema`` library) and the OpenAPI document (:func:`build_openapi`).

A request passes, in this order: the bearer token (401), the path's ids (400), the scope and the
org (403), the query (400), the body (415, 400); only then does its handler run, with a
:class:`Call` holding what was validated. Rules across fields (start before end, the 31-day
limit, retention) stay in the handlers' parsers.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web
from apispec import APISpec
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from service.api import keys
from service.api.auth import SIGNED_IN, Principal
from service.api.schemas import SCHEMAS
from service.errors import (
    ClientClosedRequest,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)

#: Formats checked: only ``uuid``, whatever optional packages are installed (``date-time`` would be
#: checked only where rfc3339-validator happens to be): timestamps have a pattern of their own.
_FORMATS: Final = FormatChecker(formats=["uuid"])
JSON: Final = "application/json"
PROBLEM: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str  # "path", "query" or "header"
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""
    #: The schema's validator, made once when the parameter is declared (not per request).
    checker: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checker = Draft202012Validator(dict(self.schema), format_checker=_FORMATS)
        object.__setattr__(self, "checker", checker)


@dataclass(frozen=True, slots=True)
class Answer:
    """One response of an operation: a JSON body of a component schema, a problem, or none."""

    description: str
    schema: str | None = None
    content_type: str = JSON
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def problem(description: str, headers: Mapping[str, Mapping[str, Any]] | None = None) -> Answer:
    return Answer(description, "Problem", PROBLEM, headers or {})


@dataclass(frozen=True, slots=True)
class Call:
    """What the contract validated for a handler."""

    principal: Principal | None
    path: Mapping[str, uuid.UUID]
    query: Mapping[str, Any]
    body: Any

    @property
    def org_id(self) -> uuid.UUID:
        return self.path["orgId"]

    @property
    def job_id(self) -> uuid.UUID:
        return self.path["jobId"]

    @property
    def caller(self) -> Principal:
        assert self.principal is not None, "only routes with a scope have a caller"
        return self.principal


Handler = Callable[[web.Request, Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    #: The scope a bearer token must grant for the path's org; ``None``: no token (probes, docs).
    scope: str | None
    answers: Mapping[int, Answer]
    parameters: tuple[Parameter, ...] = ()
    #: The component schema of the JSON body, if the operation takes one.
    body: str | None = None


# --- validation ------------------------------------------------------------------------------

_VALIDATORS: dict[str, Draft202012Validator] = {}


def validator(name: str) -> Draft202012Validator:
    """A validator for the component schema ``name`` (its ``$ref``s resolve among SCHEMAS)."""
    if name not in _VALIDATORS:
        root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": SCHEMAS}}
        _VALIDATORS[name] = Draft202012Validator(root, format_checker=_FORMATS)
    return _VALIDATORS[name]


def _field(path: Any, root: str) -> str:
    name = root
    for part in path:
        name = f"{name}[{part}]" if isinstance(part, int) else (f"{name}.{part}" if name else str(part))
    return name or "body"


def _described(error: ValidationError, root: str) -> dict[str, str]:
    """The fields one validation error is about, and what is wrong with each, in our words."""
    where = _field(error.absolute_path, root)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance: Any = error.instance
    value: Any = error.validator_value
    match error.validator:
        case "required":
            missing = [name for name in value if name not in instance]
            return {_field([*error.absolute_path, name], root): "required" for name in missing}
        case "additionalProperties":
            known = set(schema.get("properties", {}))
            return {
                _field([*error.absolute_path, name], root): "unknown field"
                for name in instance
                if name not in known
            }
        case "type":
            kinds: list[str] = value if isinstance(value, list) else [value]
            return {where: "must be " + " or ".join(_A_TYPE.get(kind) or kind for kind in kinds)}
        case "enum":
            return {where: "must be one of " + ", ".join(str(each) for each in value)}
        case "minLength" | "maxLength" | "maxItems" | "minItems" | "minimum" | "maximum":
            return {where: _BOUNDS[str(error.validator)].format(value)}
        case "format" if value == "uuid":
            return {where: "must be a UUID"}
    return {where: str(schema.get("x-message") or "is not valid")}


_A_TYPE: Final = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_BOUNDS: Final = {
    "minLength": "must be at least {} characters",
    "maxLength": "must be at most {} characters",
    "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items",
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
}


def validate(name: str, instance: object, *, root: str = "") -> None:
    """ValidationFailed naming every offending field of ``instance`` under schema ``name``."""
    found = sorted(validator(name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if not found:
        return
    errors: dict[str, str] = {}
    for error in found:
        for where, what in _described(error, root).items():
            errors.setdefault(where, what)
    first = next(iter(errors.items()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ValidationFailed(f"{first[0]}: {first[1]}{more}", errors=errors)


def _parameter_value(parameter: Parameter, raw: str) -> object:
    """A query or path value as its schema's type (query strings are text)."""
    if parameter.schema.get("type") == "integer":
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise ValidationFailed(
                f"{parameter.name} must be an integer", errors={parameter.name: "must be an integer"}
            )
        return int(raw)
    return raw


def _check_parameter(parameter: Parameter, value: object) -> None:
    found = list(parameter.checker.iter_errors(value))
    if found:
        what = _described(found[0], parameter.name)[parameter.name]
        raise ValidationFailed(f"{parameter.name} {what}", errors={parameter.name: what})


def path_values(route: Route, match_info: Mapping[str, str]) -> dict[str, uuid.UUID]:
    values: dict[str, uuid.UUID] = {}
    for parameter in route.parameters:
        if parameter.location == "path":
            raw = match_info[parameter.name]
            values[parameter.name] = _uuid_of(raw) or _checked_uuid(parameter, raw)
    return values


def _uuid_of(raw: str) -> uuid.UUID | None:
    """``raw`` as a UUID if the ``uuid`` format accepts it (hyphenated 8-4-4-4-12, the check
    jsonschema makes), parsed once; ``None`` for anything else, which the validator describes."""
    if len(raw) != 36 or raw[8] != "-" or raw[13] != "-" or raw[18] != "-" or raw[23] != "-":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def _checked_uuid(parameter: Parameter, raw: str) -> uuid.UUID:
    _check_parameter(parameter, raw)  # raises ValidationFailed, naming what is wrong
    return uuid.UUID(raw)


def query_values(route: Route, query: Mapping[str, str]) -> dict[str, object]:
    """Each declared query parameter at most once, present means a valid value (``?status=`` is
    an error, not "no filter"); unknown parameters are refused by name."""
    declared = {p.name: p for p in route.parameters if p.location == "query"}
    if not query:  # the common case, answered without the checks below
        return {name: p.schema["default"] for name, p in declared.items() if "default" in p.schema}
    unknown = sorted(set(query) - set(declared))
    if unknown:
        raise ValidationFailed(
            f"unknown field(s): {', '.join(unknown)}", errors=dict.fromkeys(unknown, "unknown field")
        )
    getall = getattr(query, "getall", None)
    repeated = sorted(name for name in declared if getall is not None and len(getall(name, [])) > 1)
    if repeated:
        raise ValidationFailed(
            f"{', '.join(repeated)} may be given once", errors=dict.fromkeys(repeated, "given more than once")
        )
    values: dict[str, object] = {}
    for name, parameter in declared.items():
        if name not in query:
            if "default" in parameter.schema:
                values[name] = parameter.schema["default"]
            continue
        value = _parameter_value(parameter, query[name])
        _check_parameter(parameter, value)
        values[name] = value
    return values


async def body_value(route: Route, request: web.Request) -> object:
    if request.content_type != JSON:
        raise UnsupportedMediaType("send the request body as application/json")
    settings = request.app[keys.SETTINGS]
    try:
        async with asyncio.timeout(settings.http_body_timeout):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {settings.http_body_timeout:g} s"
        ) from None
    except ConnectionResetError:
        raise ClientClosedRequest("the client closed the connection before its body arrived") from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}") from None
    assert route.body is not None
    validate(route.body, value)
    return value


def endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``route``: the checks in the contract's order, then its handler."""

    async def handle(request: web.Request) -> web.StreamResponse:
        principal = None
        if route.scope is not None:
            principal = await request.app[keys.VERIFIER].verify(request.headers.get("Authorization"))
        path = path_values(route, request.match_info)
        if principal is not None and route.scope not in (None, SIGNED_IN):
            principal.require(path["orgId"], route.scope)
        query = query_values(route, request.query)
        for parameter in route.parameters:
            if parameter.location == "header" and parameter.name in request.headers:
                _check_parameter(parameter, request.headers[parameter.name])
        body = await body_value(route, request) if route.body is not None else None
        return await route.handler(request, Call(principal, path, query, body))

    return handle


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, endpoint(route), name=route.operation_id)


# --- the OpenAPI document --------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(answer: Answer) -> dict[str, object]:
    document: dict[str, object] = {"description": answer.description}
    if answer.schema is not None:
        document["content"] = {answer.content_type: {"schema": _ref(answer.schema)}}
    elif answer.content_type != JSON:
        document["content"] = {answer.content_type: {"schema": {"type": "string"}}}
    if answer.headers:
        document["headers"] = {name: dict(spec) for name, spec in answer.headers.items()}
    return document


def build_openapi(routes: tuple[Route, ...]) -> dict[str, object]:
    spec = APISpec(
        title="analytics-exports",
        version="1.0.0",
        openapi_version="3.1.0",
        info={"description": "Self-serve usage and cost exports as checksummed CSV files in S3."},
        servers=[{"url": "/"}],
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "HS256 JWT with sub, orgs (org UUIDs), scope (exports:read exports:write), exp.",
        },
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema)
    by_path: dict[str, dict[str, dict[str, object]]] = {}
    for route in routes:
        operation: dict[str, object] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "responses": {str(status): _answer(answer) for status, answer in sorted(route.answers.items())},
        }
        if route.scope is None:
            operation["security"] = []
        if route.parameters:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.location,
                    "required": p.required or p.location == "path",
                    "schema": dict(p.schema),
                    **({"description": p.description} if p.description else {}),
                }
                for p in route.parameters
            ]
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(route.body)}}}
        by_path.setdefault(route.path, {})[route.method.lower()] = operation
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
