"""The OpenAPI document tells every answer an operation can give, errors included.

Errors are RFC 9457 problems (``application/problem+json``, one shared ``Problem`` schema).
Most error statuses follow from how a route is built, so they are added here once, for every
operation, by :func:`install_openapi` (an ``app.openapi`` hook):

* 429 everywhere (rate limits answer before any route runs);
* 401 and 403 where the route authenticates an API key;
* 404 where the path has parameters (an unknown or foreign id);
* 422 where the route takes parameters or a body (validation), 400 and 413 where it takes a
  body (unparseable, too large);
* 409 where the route takes an ``Idempotency-Key`` (the same key still running).

What depends on the domain (409 for a state conflict, 502 and 503 for an unreachable or
unconfigured node) a router or route declares with ``responses=problem_responses(...)``.
A status declared by the route is never overwritten.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PROBLEM_MEDIA_TYPE", "Problem", "install_openapi", "problem_responses"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_REF = {"$ref": "#/components/schemas/Problem"}

DESCRIPTIONS: dict[int, str] = {
    400: "The request body could not be parsed.",
    401: "No API key, or an unknown, revoked or malformed one (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope this operation needs.",
    404: "Not found, or not visible to this API key (both answer the same).",
    405: "The method is not allowed on this path (see the `Allow` header).",
    409: "A conflict with the current state, or the same Idempotency-Key is still running.",
    410: "Gone: used already, or expired.",
    413: "The request body is too large.",
    422: "The request is not valid, or a rule of the domain refuses it.",
    429: "Too many requests; retry after the `Retry-After` header's seconds.",
    502: "A remote node or server answered with an error.",
    503: "A backend (database, node, rate source) is busy, unreachable or not configured.",
}


class Problem(BaseModel):
    """An RFC 9457 problem. Some problems carry more members (``errors``: the invalid parts
    of the request; ``result``: the ledger's refusal code)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route: these statuses answer a problem."""
    return {status: {"description": DESCRIPTIONS.get(status, "An error."),
                     "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_REF)}}}
            for status in statuses}


def _generic_statuses(operation: dict[str, Any]) -> set[int]:
    statuses = {429}
    params = operation.get("parameters", [])
    headers = {p.get("name", "").lower() for p in params if p.get("in") == "header"}
    has_body = "requestBody" in operation
    if "x-api-key" in headers:  # the API-key dependency's headers (web.deps)
        statuses |= {401, 403}
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    if params or has_body:
        statuses.add(422)
    if has_body:
        statuses |= {400, 413}
    if "idempotency-key" in headers:
        statuses.add(409)
    if "503" in operation.get("responses", {}):
        # A route that reaches a node or a rate source: a node's refusal it did not expect
        # is a 502 (web/problems.py), its absence a 503.
        statuses.add(502)
    if has_body:
        statuses.add(409)  # a conflicting concurrent change (concurrent-update)
    return statuses


def _document_problems(schema: dict[str, Any]) -> None:
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            # FastAPI's own 422 (its HTTPValidationError, as application/json) is not what
            # the app answers: validation errors are problems too.
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for status in sorted(_generic_statuses(operation)):
                responses.setdefault(str(status), problem_responses(status)[status])
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(schema.get("paths", {})):
            components.pop(unused, None)
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` by one that documents every error answer (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 openapi_version=app.openapi_version,
                                 description=app.description, routes=app.routes,
                                 tags=app.openapi_tags, servers=app.servers)
            _document_problems(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
