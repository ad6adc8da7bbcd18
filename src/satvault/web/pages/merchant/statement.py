"""``/dashboard/m/{merchant_id}/statement``: the merchant wallet's ledger history, newest
first, filtered by date range, direction and code, a page at a time (the API's statement,
with its cursor), and the same filtered statement as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.kernel.clock import utcnow
from satvault.kernel.days import day_end, day_start
from satvault.kernel.errors import InvalidInput
from satvault.ledger.core import TransferKind
from satvault.ledger.history import StatementLine, codes_of, statement
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import PageLang, PageUser, mark_page
from satvault.web.pages.merchant.texts import N_, translate
from satvault.web.pages.merchant.wallet_access import merchant_wallet
from satvault.web.pages.render import PAGE_HEADERS, render
from satvault.web.state import sessions_of

__all__ = ["CSV_COLUMNS", "PAGE_SIZE", "csv_row", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
PAGE_SIZE = 50
CSV_BATCH = 500
# ``posted_msat``: what the line changed the posted balance by (a hold, its void or expiry:
# 0; a single transfer or a hold's posting: the signed amount), so the column sums to the
# balance; ``amount_msat`` counts a withdrawal twice (its hold and its posting).
CSV_COLUMNS = ["seq", "created_at", "transfer_id", "kind", "direction", "code", "ref",
               "amount_msat", "amount_sat", "balance_msat", "available_msat", "hold_state",
               "posted_msat"]
_POSTING = frozenset({TransferKind.SINGLE, TransferKind.POST})


@dataclass(frozen=True, slots=True)
class Filters:
    start: date | None
    end: date | None
    direction: str | None
    code: str | None
    errors: tuple[str, ...]

    def query(self) -> dict[str, str]:
        q = {"from": self.start.isoformat() if self.start else "",
             "to": self.end.isoformat() if self.end else "",
             "direction": self.direction or "", "code": self.code or ""}
        return {k: v for k, v in q.items() if v}

    def service_args(self) -> dict[str, object]:
        return {
            "since": day_start(self.start), "until": day_end(self.end),
            "direction": self.direction, "codes": [self.code] if self.code else None}


def _day(value: str, error: str, errors: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(error)
        return None


def parse_filters(start: str, end: str, direction: str, code: str) -> Filters:
    """The filters as the form sent them; what does not parse is reported, not applied."""
    errors: list[str] = []
    d0 = _day(start, N_("“From” is not a date (YYYY-MM-DD)."), errors)
    d1 = _day(end, N_("“To” is not a date (YYYY-MM-DD)."), errors)
    if d0 and d1 and d1 < d0:
        errors.append(N_("The period ends before it starts."))
        d0 = d1 = None
    if direction not in ("", "credit", "debit"):
        errors.append(N_("Direction is money in or money out."))
        direction = ""
    return Filters(d0, d1, direction or None, code or None, tuple(errors))


FilterQuery = Annotated[str, Query(max_length=40)]


@router.get("/dashboard/m/{merchant_id}/statement", response_class=HTMLResponse)
async def statement_page(
    merchant_id: str, request: Request, view: PageUser, lang: PageLang,
    session: SessionDep, start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "", direction: FilterQuery = "",
    code: FilterQuery = "", cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    filters = parse_filters(start, end, direction, code)
    page = await statement(session, wallet.ledger_account_id, limit=PAGE_SIZE, cursor=cursor,
                           **filters.service_args())  # type: ignore[arg-type]
    codes = await codes_of(session, wallet.ledger_account_id)
    return render(request, "merchant/statement.html", lang=lang, view=view,
                  merchant=merchant, lines=page.lines, next_cursor=page.next_cursor,
                  filters=filters, codes=codes, query=filters.query(),
                  errors=[translate(lang, e) for e in filters.errors],
                  status_code=422 if filters.errors else 200)


def csv_row(line: StatementLine) -> list[str | int]:
    """One statement line as CSV: integers, msat and whole sats (toward zero)."""
    signed = line.amount if line.direction == "credit" else -line.amount
    sat = signed // 1000 if signed >= 0 else -((-signed) // 1000)
    return [line.seq, line.created_at.astimezone(UTC).isoformat(), line.transfer_id,
            line.kind.value, line.direction, line.code, line.ref, signed, sat,
            line.posted_after, line.available_after,
            line.hold_state.value if line.hold_state else "",
            signed if line.kind in _POSTING else 0]


async def _csv(sessions: async_sessionmaker[AsyncSession], account_id: int,
               filters: Filters) -> AsyncIterator[str]:
    """The whole filtered statement, a batch per short read (no transaction held open
    while the client downloads)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    cursor: str | None = None
    while True:
        async with sessions() as session:
            page = await statement(session, account_id, limit=CSV_BATCH, cursor=cursor,
                                   **filters.service_args())  # type: ignore[arg-type]
        for line in page.lines:
            writer.writerow(csv_row(line))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@router.get("/dashboard/m/{merchant_id}/statement.csv")
async def statement_csv(
    merchant_id: str, request: Request, view: PageUser, lang: PageLang,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "", direction: FilterQuery = "",
    code: FilterQuery = "",
) -> Response:
    sessions = sessions_of(request)
    async with sessions() as session, session.begin():
        _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    filters = parse_filters(start, end, direction, code)
    if filters.errors:
        # found from outside: a filter that does not parse is refused, as the page refuses
        # it, not dropped: an export of one period that silently held every line is wrong
        # books for whoever reads it.
        raise InvalidInput(" ".join(translate(lang, e) for e in filters.errors))
    name = f"statement-{merchant.id}-{utcnow().date().isoformat()}.csv"
    headers = {**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(_csv(sessions, wallet.ledger_account_id, filters),
                             media_type="text/csv; charset=utf-8", headers=headers)
