"""Errors to RFC 9457 problem+json, mapped once at the edge by walking the exception's MRO.

Domain errors never know about HTTP. Anything not in the table (a bare ValueError, an
AssertionError) is a 500 with no detail leaked; it is never turned into a 4xx.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from satvault.accounts import errors as acc
from satvault.ledger import errors as led
from satvault.ledger.history import InvalidCursor
from satvault.logs import get_logger

__all__ = ["ERROR_STATUS", "install_problem_handlers", "problem"]

log = get_logger(__name__)

ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    acc.NotFound: (404, "not-found"),
    acc.AlreadyExists: (409, "already-exists"),
    acc.InvalidInput: (422, "invalid-input"),
    acc.Unauthenticated: (401, "unauthenticated"),
    acc.Forbidden: (403, "forbidden"),
    led.AccountNotFound: (404, "not-found"),
    led.InsufficientFunds: (422, "insufficient-funds"),
    led.TransferConflict: (422, "idempotency-conflict"),
    led.HoldNotPending: (409, "hold-not-pending"),
    led.UnknownAccount: (404, "not-found"),
    led.InvalidTransfer: (422, "invalid-transfer"),
    led.LedgerBusy: (503, "busy"),
    InvalidCursor: (422, "invalid-cursor"),
}


def problem(status: int, slug: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"https://satvault.dev/problems/{slug}", "title": slug.replace("-", " "),
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _lookup(exc: Exception) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return None


def install_problem_handlers(app: FastAPI) -> None:
    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        mapped = _lookup(exc)
        if mapped is None:
            log.error("unhandled_error", path=request.url.path, error=type(exc).__name__)
            return problem(500, "internal-error", "internal error; it has been logged")
        status, slug = mapped
        extra = {}
        if isinstance(exc, led.TransferRejected):
            extra["result"] = exc.result.value
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        resp = problem(status, slug, str(exc), **extra)
        if headers:
            resp.headers.update(headers)
        return resp

    # Registered per error-tree root so Starlette's ExceptionMiddleware answers them (a handler
    # for bare Exception runs in ServerErrorMiddleware, which re-raises after responding).
    roots: set[type[Exception]] = {acc.AccountsError, led.LedgerError, InvalidCursor}
    for root in roots:
        app.add_exception_handler(root, _domain)
    app.add_exception_handler(Exception, _domain)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem(422, "invalid-request", "the request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "http-error", str(exc.detail))
