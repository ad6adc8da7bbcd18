"""What every merchant page of stores, invoices, keys, webhooks and Lightning shares: the
merchant the signed-in user owns (another merchant's id is a 404), the form's own short
transaction, and how a refused form input is told back.

A form is validated with the API's own request model (same limits, same messages) and then
handed to the API's service in a transaction of its own, so a refusal rolls back everything
and the page shows the form again with the user's input and the reason.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import Merchant
from satvault.accounts.service import Principal
from satvault.amounts import InvalidAmount, parse_whole_sats
from satvault.auth.sessions import SessionView
from satvault.kernel.errors import AuthError, NotFound, SatvaultError
from satvault.web.idempotency import IdempotencyInProgress, run_idempotent
from satvault.web.pages.deps import merchant_principal
from satvault.web.pages.merchant.texts import N_
from satvault.web.problems import ERROR_STATUS

__all__ = [
    "FORM_KEY",
    "FormRefused",
    "Owner",
    "form_key",
    "form_msat",
    "form_values",
    "made_id",
    "once",
    "owner",
    "parse",
    "refusal",
    "status_for",
    "transaction",
    "typed",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Owner:
    """The merchant a page is about and the principal the page acts as."""

    merchant: Merchant
    principal: Principal

    @property
    def id(self) -> str:
        return self.merchant.id

    @property
    def actor(self) -> str:
        # the API writes key:<id>; a page's principal carries the web session's id
        return f"key:{self.principal.key_id}"


class FormRefused(Exception):
    """A form's input refused before any service ran (status, message)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def form_msat(values: dict[str, Any], name: str, what: str) -> int | None:
    """A form's optional amount in whole sats (separators of thousands allowed) → msat;
    empty: None."""
    text = str(values.get(name, ""))
    if not text.strip():
        return None
    try:
        return parse_whole_sats(text) * 1000
    except InvalidAmount:
        raise FormRefused(f"{what}: a whole number of sats") from None


async def owner(session: AsyncSession, view: SessionView, merchant_id: str) -> Owner:
    principal = await merchant_principal(session, view, merchant_id)
    merchant = await session.get(Merchant, merchant_id)
    assert merchant is not None
    return Owner(merchant, principal)


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """A unit of work for a form's change: committed if the block ends, rolled back (nothing
    changed) if it raises."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session, session.begin():
        yield session


# The hidden field a form that makes something carries (see :func:`once`).
FORM_KEY = "idempotency_key"


def form_key() -> str:
    """A new key for a form that makes something, rendered into it as :data:`FORM_KEY`: every
    rendering of the form (a refusal's included) is a new request."""
    return uuid.uuid4().hex


async def once(request: Request, values: Mapping[str, Any], *, owner: str,
               work: Callable[[AsyncSession], Awaitable[tuple[int, Any]]]) -> JSONResponse:
    """``work`` run once per form: under the form's :data:`FORM_KEY` in the API's idempotency
    store (``owner``: the principal's owner, as the API keys them), so the same form sent
    twice (a double click, a page sent again; one after the other or at once) makes what it
    makes once. The answer is ``work``'s stored one, which must hold no secret: on a replay
    the caller says what was made without showing it again. A form without its key is
    refused (a page from elsewhere, or from before the key), as is a refusal replayed. The
    route needs ``KeepBody`` before its CSRF check: the key's request is recognised by its
    body's hash."""
    key = str(values.get(FORM_KEY, "")).strip()
    if not key or len(key) > 200:
        raise FormRefused("This form expired. Reload the page and try again.")
    try:
        answer = await run_idempotent(request, owner=owner, key=key, work=work)
    except IdempotencyInProgress:  # the first sending still runs (a double click)
        raise FormRefused("This form is being sent already: wait a moment, then reload the "
                          "page to see what it made.", 409) from None
    if answer.status_code >= 400:  # a refusal stored under this key, replayed
        try:
            detail = str(json.loads(bytes(answer.body))["detail"])
        except (ValueError, KeyError, TypeError):
            detail = "This request was refused."
        raise FormRefused(detail, answer.status_code)
    return answer


def made_id(answer: JSONResponse) -> str:
    """The id of what :func:`once`'s ``work`` made, from its stored answer (``{"id": …}``):
    what a replayed form names."""
    return str(json.loads(bytes(answer.body))["id"])


def status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls][0]
    return 422


def field_message(error: Mapping[str, Any]) -> str:
    """One refusal of a request model, for a form: which field and why. The forms take sats
    where the models take msat, so an amount the model refuses is said in the form's terms
    (found from outside: a page said "amount_msat: Input should be less than or equal to
    2100000000000000000" of a field in sats)."""
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    if where == "amount_msat":
        return N_("The amount is out of range.")
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` checked by the API's request model; a refusal says which field and why."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FormRefused("; ".join(field_message(e) for e in exc.errors())) from None


def refusal(exc: Exception) -> tuple[int, str]:
    """(status, message) for a refused form, from a service error or a parse refusal."""
    if isinstance(exc, FormRefused):
        return exc.status, str(exc)
    if isinstance(exc, SatvaultError) and not isinstance(exc, NotFound | AuthError):
        return status_for(exc), str(exc)
    raise exc  # not found, not allowed, or not the input's fault: the error page


async def form_values(request: Request) -> dict[str, Any]:
    """The posted form: single values as strings, repeated names (checkboxes) as lists."""
    form = await request.form()
    values: dict[str, Any] = {}
    for key in form:
        items = [v for v in form.getlist(key) if isinstance(v, str)]
        values[key] = items if len(items) > 1 else (items[0] if items else "")
    return values


_INT = re.compile(r"-?[0-9]{1,18}")


def typed(values: Mapping[str, Any], *, ints: tuple[str, ...] = (),
          drop_blank: tuple[str, ...] = ()) -> dict[str, Any]:
    """A form's strings as the JSON body the API would get: the ``ints`` that look like
    integers as integers (anything else is left for the model to refuse), the ``drop_blank``
    fields left empty left out (the API's default applies)."""
    out = {k: v for k, v in values.items() if k != "csrf_token"}
    for name in drop_blank:
        if isinstance(out.get(name), str) and not out[name].strip():
            out.pop(name)
    for name in ints:
        value = out.get(name)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            out[name] = int(value.strip())
    return out
