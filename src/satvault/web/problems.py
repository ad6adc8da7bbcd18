"""Errors to RFC 9457 problem+json, mapped once at the edge by walking the exception's MRO.

Domain errors never know about HTTP. Anything not in the table (a bare ValueError, an
AssertionError) is a 500 with no detail leaked; it is never turned into a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from satvault.auth import errors as au
from satvault.auth.sealing import SealedSecretUnavailable
from satvault.backends import errors as be
from satvault.events import errors as ev
from satvault.kernel import errors as acc
from satvault.kernel.errors import ConcurrentUpdate, StaleVersion
from satvault.kernel.retrying import db_unavailable, is_retryable
from satvault.kyc import errors as kyc
from satvault.ledger import errors as led
from satvault.ledger.core import Result
from satvault.ledger.history import InvalidCursor
from satvault.lightning import errors as ln
from satvault.logs import get_logger
from satvault.onchain import errors as oc
from satvault.payouts import errors as po
from satvault.rates import errors as rerr
from satvault.reconcile.errors import CannotResolveBatch, ReviewItemResolved, SignerNotReached
from satvault.risk import errors as risk
from satvault.withdrawals.policy import errors as wp

__all__ = ["ERROR_STATUS", "LNURL_CORS", "as_page", "install_problem_handlers", "lnurl_error",
           "problem", "problem_for"]

log = get_logger(__name__)

ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    acc.NotFound: (404, "not-found"),
    acc.AlreadyExists: (409, "already-exists"),
    acc.InvalidInput: (422, "invalid-input"),
    acc.Unauthenticated: (401, "unauthenticated"),
    acc.Forbidden: (403, "forbidden"),
    acc.StepUpRequired: (403, "step-up-required"),
    acc.NotHolder: (403, "not-wallet-holder"),
    au.AccountLocked: (429, "account-locked"),
    au.InvalidCode: (401, "invalid-code"),
    au.SecondFactorNeeded: (401, "second-factor-required"),
    au.EnrollmentRequired: (403, "totp-enrollment-required"),
    au.MailUnavailable: (503, "mail-unavailable"),
    SealedSecretUnavailable: (503, "secret-key-missing"),
    led.AccountNotFound: (404, "not-found"),
    led.InsufficientFunds: (422, "insufficient-funds"),
    led.TransferConflict: (422, "idempotency-conflict"),
    led.HoldNotPending: (409, "hold-not-pending"),
    led.UnknownAccount: (404, "not-found"),
    led.InvalidTransfer: (422, "invalid-transfer"),
    acc.Busy: (503, "busy"),
    # Another transaction got there first and the conflict outlived the retries: try again.
    ConcurrentUpdate: (409, "concurrent-update"),
    StaleVersion: (409, "concurrent-update"),
    InvalidCursor: (422, "invalid-cursor"),
    oc.WrongNetwork: (422, "wrong-network"),
    oc.InvalidAddress: (422, "invalid-address"),
    oc.InvalidPaymentUri: (422, "invalid-payment-uri"),
    oc.InvalidKey: (422, "invalid-key"),
    oc.InvalidDescriptor: (503, "not-configured"),
    po.InvalidWithdrawal: (422, "invalid-withdrawal"),
    kyc.LimitExceeded: (422, "kyc-limit-exceeded"),
    kyc.WalletFrozen: (403, "wallet-frozen"),
    po.CannotBumpFee: (409, "cannot-bump-fee"),
    po.CannotCancel: (409, "cannot-cancel"),
    po.LimitReachedAtRelease: (409, "limit-reached-at-release"),
    risk.RiskRejected: (403, "risk-rejected"),
    risk.RuleSetRefused: (409, "rule-set-refused"),
    risk.CaseRefused: (409, "case-refused"),
    risk.FrozenDepositRefused: (409, "frozen-deposit-refused"),
    be.BackendUnavailable: (503, "backend-unavailable"),
    # Anything else a node says (a refused invoice or transaction, an unreadable answer) is a
    # bad gateway, never a 500; its text stays in the log (see problem_for).
    be.BackendError: (502, "backend-error"),
    ln.WrongNetwork: (422, "wrong-network"),
    ln.InvoiceExpired: (422, "invoice-expired"),
    ln.InvoiceExpiresSoon: (422, "invoice-expires-soon"),
    ln.InvoiceUnderReview: (409, "invoice-under-review"),
    ln.RefusedTooOften: (429, "refused-too-often"),
    ln.PaymentsInFlight: (429, "payments-in-flight"),
    ln.PaymentKeyInFlight: (409, "idempotency-key-in-use"),
    ln.AmountRequired: (422, "amount-required"),
    ln.InvalidInvoice: (422, "invalid-invoice"),
    ln.PaymentRefused: (422, "payment-refused"),
    ln.LnurlError: (422, "lnurl-error"),
    ln.LightningError: (422, "lightning-error"),
    rerr.UnsupportedCurrency: (422, "unsupported-currency"),
    rerr.RateUnavailable: (503, "rate-unavailable"),
    rerr.RateError: (503, "rate-unavailable"),
    ev.UnsafeUrl: (422, "unsafe-url"),
    ev.InvalidWebhook: (422, "invalid-webhook"),
    ev.InvalidStream: (422, "invalid-stream"),
    wp.WithdrawalBlocked: (403, "withdrawal-blocked"),
    wp.NotAnApprover: (403, "not-an-approver"),
    wp.ApprovalClosed: (409, "approval-closed"),
    wp.InvalidPolicy: (422, "invalid-policy"),
    ReviewItemResolved: (409, "review-item-resolved"),
    CannotResolveBatch: (409, "cannot-resolve-batch"),
    SignerNotReached: (503, "signer-unavailable"),
}


def _register_late() -> None:
    # Idempotency errors live in web/idempotency.py, which imports this module lazily.
    from satvault.web.idempotency import (
        IdempotencyClaimLost,
        IdempotencyConflict,
        IdempotencyInProgress,
    )

    ERROR_STATUS[IdempotencyConflict] = (422, "idempotency-key-reused")
    ERROR_STATUS[IdempotencyInProgress] = (409, "idempotency-key-in-use")
    ERROR_STATUS[IdempotencyClaimLost] = (409, "idempotency-key-in-use")


# LNURL endpoints are called from wallets' web pages too (LUD-01 asks for it).
LNURL_CORS = {"Access-Control-Allow-Origin": "*"}
# The ledger's refusals that mean the money is not there.
_SHORT = frozenset({Result.EXCEEDS_CREDITS, Result.EXCEEDS_DEBITS})


def lnurl_error(reason: str) -> JSONResponse:
    """A refusal the LNURL way (LUD-01): HTTP 200 ``{"status": "ERROR", "reason": …}``,
    all a wallet reads, for the wallet-facing endpoints instead of a problem."""
    return JSONResponse({"status": "ERROR", "reason": reason}, headers=LNURL_CORS)


def problem(status: int, slug: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"https://satvault.dev/problems/{slug}", "title": slug.replace("-", " "),
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _lookup(exc: Exception) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return None


def problem_for(exc: Exception) -> JSONResponse | None:
    """The problem+json response for a domain error, or None if it is not one of ours. A
    database conflict that reached the edge unretried (a deadlock, a serialisation failure,
    a lock timeout: its transaction rolled back, nothing was done) is a 409
    ``concurrent-update``, never a 500 (found from outside: a deadlock under concurrent
    decisions answered 500)."""
    mapped = _lookup(exc)
    if mapped is None and db_unavailable(exc):
        log.warning("database_unavailable", error=type(exc).__name__)
        resp = problem(503, "busy", "the database had no connection free in time: try again "
                       "(with the same Idempotency-Key a retry is answered as the first was, "
                       "if it got through)")
        resp.headers["Retry-After"] = "1"
        return resp
    if mapped is None and is_retryable(exc):
        log.warning("conflict_reached_the_edge", error=type(exc).__name__)
        return problem(409, "concurrent-update", "a concurrent change got in the way; nothing "
                       "was done: try again")
    if mapped is None:
        return None
    status, slug = mapped
    extra: dict[str, Any] = {}
    if isinstance(exc, led.TransferRejected):
        extra["result"] = exc.result.value
    if isinstance(exc, kyc.LimitExceeded):
        extra.update(exc.as_problem())
    if isinstance(exc, risk.RiskRejected):
        extra["decision_id"], extra["case_id"] = exc.decision_id, exc.case_id
    if isinstance(exc, au.AccountLocked):
        extra["retry_after"] = exc.retry_after
    if isinstance(exc, po.CannotCancel):
        extra["withdrawal_status"] = exc.status
    detail = str(exc)
    if isinstance(exc, led.InsufficientFunds) and exc.result in _SHORT:
        # Said as what was wrong (found from outside: the ledger's own words named an
        # internal transfer key and a result code); the code stays in ``result``.
        detail = ("the wallet's available balance does not cover this (the amount, and any "
                  "fee reserve held with it)")
    if status == 502:
        log.warning("backend_error", error=type(exc).__name__, detail=detail)
        detail = "the Bitcoin or Lightning node refused or could not handle this request"
    resp = problem(status, slug, detail, **extra)
    if status == 401:
        resp.headers["WWW-Authenticate"] = "Bearer"
    retry_after = getattr(exc, "retry_after", None)  # a lock, a claim still running
    if isinstance(retry_after, int) and slug in ("account-locked", "idempotency-key-in-use",
                                                  "payments-in-flight"):
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path. Starlette's 405 names only the first
    route that matched the path, and GET and POST on one path are two routes here."""
    methods: set[str] = set()
    path = request.url.path
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.path and compile_path(route.path)[0].match(path):
            methods |= route.methods
    return sorted(methods)


def _unreadable_json(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not read a JSON body, when its 400 "There was an error parsing the
    body" hides a :class:`ValueError` of the body's own (found from outside: a number of 5,000
    digits, past Python's 4,300 for an integer, and a body that is not UTF-8 were a bare 400
    where any other body that is not JSON is a 422); None for any other HTTP error."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not UTF-8 (JSON is)"
    if "integer string conversion" in str(cause):
        return "a number in the body has more than 4300 digits"
    return "the body is not valid JSON"


PageErrors = Callable[[Request, int, str], Response]


def as_page(request: Request, resp: JSONResponse) -> Response:
    """On a page (a route under web/pages, which marks the request), the same error as an
    HTML page in the reader's language instead of problem+json."""
    renderer: PageErrors | None = getattr(request.app.state, "page_errors", None)
    if renderer is None or not getattr(request.state, "page", False):
        return resp
    body = json.loads(bytes(resp.body))
    return renderer(request, resp.status_code, str(body.get("detail", "")))


def install_problem_handlers(app: FastAPI) -> None:
    _register_late()

    async def _domain(request: Request, exc: Exception) -> Response:
        resp = problem_for(exc)
        if resp is None:
            log.error("unhandled_error", path=request.url.path, error=type(exc).__name__,
                      exc_info=exc)
            resp = problem(500, "internal-error", "internal error; it has been logged")
        return as_page(request, resp)

    # Registered per error-tree root so Starlette's ExceptionMiddleware answers them (a handler
    # for bare Exception runs in ServerErrorMiddleware, which re-raises after responding).
    app.add_exception_handler(acc.SatvaultError, _domain)
    # The database's errors too: a conflict (409) or no connection free (503) is an answer,
    # not an exception for the server to re-raise after it.
    app.add_exception_handler(SQLAlchemyError, _domain)
    app.add_exception_handler(Exception, _domain)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return as_page(_request, problem(422, "invalid-request", "the request is not valid",
                                          errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        unreadable = _unreadable_json(exc)
        if unreadable is not None:
            return as_page(_request, problem(422, "invalid-request", "the request is not valid",
                                              errors=[{"loc": ["body"], "msg": unreadable}]))
        resp = problem(exc.status_code, "http-error", str(exc.detail))
        # Starlette's own headers must survive: `Allow` on a 405 (RFC 9110 requires it).
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405 and (allowed := _allowed_methods(_request)):
            resp.headers["Allow"] = ", ".join(allowed)
        return as_page(_request, resp)
