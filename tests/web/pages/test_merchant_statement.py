"""The merchant statement page: the wallet's ledger lines filtered by period, direction and
kind, a page at a time, and the same filtered statement as CSV (integers: msat and sats);
the money forms refuse a post without the CSRF token; another merchant's statement is 404."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit
from satvault.onchain.models import DepositRequest
from satvault.web.pages.merchant.statement import CSV_COLUMNS, PAGE_SIZE
from tests.web.pages.conftest import People, csrf_of, sign_in

_ROW = re.compile(r'<tr data-seq="(\d+)">')


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


async def books(sessions: async_sessionmaker[AsyncSession], merchant_id: str) -> None:
    """Nov 1: a 10,000 sat deposit; Nov 2: a 2,500.123 sat Lightning deposit; Nov 3: a
    3,000 sat withdrawal; Nov 4: ``PAGE_SIZE`` small deposits."""
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant_id)
    ext, mine = platform.external.id, wallet.ledger_account_id

    def spec(n: str, debit: int, credit: int, amount: int, code: str) -> TransferSpec:
        return TransferSpec(id=f"t:{n}", debit_account_id=debit, credit_account_id=credit,
                            amount=amount, asset="BTC", code=code, ref=f"ref-{n}")

    await submit(sessions, [spec("1", ext, mine, 10_000_000, "deposit")], now=at(1))
    await submit(sessions, [spec("2", ext, mine, 2_500_123, "ln_deposit")], now=at(2))
    await submit(sessions, [spec("3", mine, ext, 3_000_000, "withdrawal")], now=at(3))
    await submit(sessions, [spec(f"s{i}", ext, mine, 1000, "deposit")
                            for i in range(PAGE_SIZE)], now=at(4))


async def rows(client: httpx.AsyncClient, url: str, **params: str) -> list[int]:
    r = await client.get(url, params=params) if params else await client.get(url)
    assert r.status_code == 200, r.text
    return [int(x) for x in _ROW.findall(r.text)]


async def test_statement_filters_pages_and_csv(browser: httpx.AsyncClient, people: People,
                                               sessions) -> None:
    await books(sessions, people.alice_merchant)
    await sign_in(browser, "alice@example.com")
    url = f"/dashboard/m/{people.alice_merchant}/statement"

    first = await browser.get(url)
    assert first.status_code == 200
    seqs = [int(x) for x in _ROW.findall(first.text)]
    assert len(seqs) == PAGE_SIZE and seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older
    rest = await rows(browser, older.group(1).replace("&amp;", "&"))
    assert len(rest) == 3 and max(rest) < min(seqs)  # the three oldest, nothing twice

    assert len(await rows(browser, url, direction="debit")) == 1
    assert len(await rows(browser, url, code="ln_deposit")) == 1
    assert len(await rows(browser, url, **{"from": "2026-11-02", "to": "2026-11-03"})) == 2
    assert len(await rows(browser, url, **{"from": "2026-11-01", "to": "2026-11-01",
                                           "direction": "credit"})) == 1
    bad = await browser.get(url, params={"from": "banana"})
    assert bad.status_code == 422 and "is not a date" in bad.text

    r = await browser.get(url + ".csv", params={"direction": "credit", "to": "2026-11-03"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0].keys()) == CSV_COLUMNS
    assert [(t["code"], t["amount_msat"], t["amount_sat"], t["balance_msat"])
            for t in table] == [("ln_deposit", "2500123", "2500", "12500123"),
                                ("deposit", "10000000", "10000", "10000000")]
    everything = list(csv.DictReader(io.StringIO((await browser.get(url + ".csv")).text)))
    assert len(everything) == PAGE_SIZE + 3  # every page, not only the first
    out = [t for t in everything if t["direction"] == "debit"]
    assert [(t["amount_msat"], t["amount_sat"], t["available_msat"]) for t in out] == [
        ("-3000000", "-3000", "9500123")]

    # Bob's session sees none of it.
    async with httpx.AsyncClient(transport=browser._transport,
                                 base_url="http://test") as bob:
        await sign_in(bob, "bob@example.com")
        for path in ("", ".csv"):
            assert (await bob.get(url + path)).status_code == 404
        assert (await bob.get(f"/dashboard/m/{people.bob_merchant}/statement")).status_code \
            == 200


async def test_money_forms_refuse_a_post_without_csrf(browser: httpx.AsyncClient,
                                                     people: People, sessions) -> None:
    await sign_in(browser, "alice@example.com")
    base = f"/dashboard/m/{people.alice_merchant}"
    page = await browser.get(f"{base}/deposit")
    assert page.status_code == 200 and "Lightning is not set up" in page.text
    r = await browser.post(f"{base}/deposit", data={"method": "onchain"})
    assert r.status_code == 403
    r = await browser.post(f"{base}/deposit", data={"method": "onchain",
                                                    "csrf_token": "forged"})
    assert r.status_code == 403
    r = await browser.post(f"{base}/withdraw", data={"rail": "onchain", "amount_sat": "1",
                                                     "destination": "x"})
    assert r.status_code == 403
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(DepositRequest))
                ).scalar_one() == 0
    # Bad input on the deposit form: the message, the input kept, nothing made.
    r = await browser.post(f"{base}/deposit", data={"method": "onchain", "amount_sat": "-3",
                                                    "csrf_token": csrf_of(page.text)})
    assert r.status_code == 422 and "positive number of sats" in r.text
    assert 'value="-3"' in r.text
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(DepositRequest))
                ).scalar_one() == 0


def test_bar_chart_is_accessible_svg_with_proportional_bars() -> None:
    from satvault.web.pages.merchant.charts import Series, bar_chart

    svg = str(bar_chart(title="Volume <30 days>", desc="in & out", labels=["a", "b", "c"],
                        unit_divisor=1000,
                        series=[Series("On-chain", "c1", [1000, 0, 4000]),
                                Series("Lightning", "c2", [3000, 0, 0])]))
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert ">Volume &lt;30 days&gt;</title>" in svg and svg.count("-t\"") == 1
    assert "-d\">in &amp; out</desc>" in svg
    heights = [float(h) for h in re.findall(r'<rect class="c\d"[^>]* height="([\d.]+)"', svg)]
    assert len(heights) == 3  # zero values draw nothing
    assert heights[0] + heights[1] == heights[2]  # stacked a (1 + 3) equals c (4)
    assert "a: Lightning 3</title>" in svg  # each bar says its value, in the axis unit
    assert "style=" not in svg  # the CSP: colours come from classes


def test_withdrawal_status_as_the_merchant_reads_it() -> None:
    from satvault.lightning.models import LnPayment, LnPaymentStatus
    from satvault.payouts.models import Withdrawal, WithdrawalStatus
    from satvault.withdrawals.listing import display_status

    def wd(status: WithdrawalStatus) -> Withdrawal:
        return Withdrawal(id="wd_x", status=status)

    lost = LnPayment(status=LnPaymentStatus.UNKNOWN)
    assert [display_status(wd(s), None) for s in WithdrawalStatus] == [
        {"awaiting_approval": "review", "batched": "pending"}.get(s.value, s.value)
        for s in WithdrawalStatus]
    assert display_status(wd(WithdrawalStatus.PENDING), lost) == "unknown"
    assert display_status(wd(WithdrawalStatus.CONFIRMED), lost) == "confirmed"
    assert display_status(wd(WithdrawalStatus.PENDING),
                          LnPayment(status=LnPaymentStatus.IN_FLIGHT)) == "pending"


async def test_the_statement_through_the_last_day_has_no_end(browser: httpx.AsyncClient,
                                                             people: People,
                                                             sessions) -> None:
    """``to`` is a day, included: its bound is the midnight after it, and 9999-12-31 has none
    (``date.max + 1 day`` overflowed: a 500). Through the last day, every line is listed."""
    await books(sessions, people.alice_merchant)
    await sign_in(browser, "alice@example.com")
    url = f"/dashboard/m/{people.alice_merchant}/statement"
    everything = await rows(browser, url)
    assert await rows(browser, url, **{"from": "0001-01-01", "to": "9999-12-31"}) == everything
    r = await browser.get(url + ".csv", params={"to": "9999-12-31"})
    assert r.status_code == 200 and len(r.text.splitlines()) > 1


async def test_the_csv_says_what_each_line_did_to_the_balance(browser: httpx.AsyncClient,
                                                              people: People,
                                                              sessions) -> None:
    """Found from outside: a withdrawal is two lines (its hold, then its posting), each with
    the amount: summing `amount_msat` counted it twice, and a voided hold once though it moved
    nothing. `posted_msat` is what each line changed the posted balance by, so the column
    sums to the balance."""
    from satvault.ledger.core import TransferKind

    await books(sessions, people.alice_merchant)
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.ensure_wallet(s, owner_type="merchant",
                                         owner_id=people.alice_merchant)
    ext, mine = platform.external.id, wallet.ledger_account_id
    for n, settle in (("paid", TransferKind.POST), ("gone", TransferKind.VOID)):
        await submit(sessions, [TransferSpec(
            id=f"h:{n}", debit_account_id=mine, credit_account_id=ext, amount=1_000_000,
            asset="BTC", kind=TransferKind.PENDING, code="withdrawal", ref=n)], now=at(5))
        await submit(sessions, [TransferSpec(id=f"h:{n}:{settle.value}", kind=settle,
                                             pending_id=f"h:{n}")], now=at(6))
    await sign_in(browser, "alice@example.com")
    r = await browser.get(f"/dashboard/m/{people.alice_merchant}/statement.csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    newest = int(table[0]["balance_msat"])
    assert newest == 10_000_000 + 2_500_123 - 3_000_000 + PAGE_SIZE * 1000 - 1_000_000
    assert sum(int(t["posted_msat"]) for t in table) == newest
    by_id = {t["transfer_id"]: t["posted_msat"] for t in table}
    assert (by_id["h:paid"], by_id["h:paid:post"], by_id["h:gone"], by_id["h:gone:void"]) \
        == ("0", "-1000000", "0", "0")
    # The page too (found from outside: a deposit's hold and its posting were two lines of
    # "+150,000"): a line that moved the balance is signed, a hold or its release is in
    # parentheses, so the signed amounts add up to the balance.
    page = await browser.get(f"/dashboard/m/{people.alice_merchant}/statement",
                             params={"from": "2026-11-05"})
    cells = re.findall(r'<td class="num" data-change="([^"]*)">([^<]*(?:<[^>]+>[^<]*</[^>]+>)?)'
                       r'</td>', page.text)
    assert sorted(c for c, _ in cells) == ["-1000000", "0", "0", "0"], cells
    signed = [text for change, text in cells if change != "0"]
    assert signed == ["\u22121,000"], cells  # a minus sign
    assert all("(1,000)" in text for change, text in cells if change == "0"), cells


async def test_the_csv_refuses_the_filters_the_page_refuses(browser: httpx.AsyncClient,
                                                            people: People,
                                                            sessions) -> None:
    """Found from outside: the CSV ignored a filter it could not read and exported every
    line with a 200 (an accountant asking for one period got the whole history), where the
    page refuses the same query with a 422. It refuses it too, saying why."""
    await books(sessions, people.alice_merchant)
    await sign_in(browser, "alice@example.com")
    url = f"/dashboard/m/{people.alice_merchant}/statement"
    for params, why in (({"from": "2026-13-45"}, "is not a date"),
                        ({"to": "banana"}, "is not a date"),
                        ({"from": "2026-12-08", "to": "2026-12-07"}, "ends before it starts"),
                        ({"direction": "both"}, "money in or money out")):
        page = await browser.get(url, params=params)
        assert page.status_code == 422 and why in page.text
        r = await browser.get(url + ".csv", params=params)
        assert r.status_code == 422, (params, r.text[:200])
        assert why in r.text and not r.headers["content-type"].startswith("text/csv")
        assert "content-disposition" not in r.headers


async def test_the_dashboards_event_stream_refuses_a_malformed_position(
        browser: httpx.AsyncClient, people: People) -> None:
    """Found from outside (the API's stream, and this one beside it): a malformed
    Last-Event-ID was FastAPI's generic refusal; it is the stream's own, saying what a
    position is."""
    await sign_in(browser, "alice@example.com")
    url = f"/dashboard/m/{people.alice_merchant}/events"
    for bad in ("abc", "9" * 23, "3\n"):
        r = await browser.get(url, params={"last_event_id": bad})
        assert r.status_code == 422 and "Last-Event-ID" in r.text, bad
    r = await browser.get(url, headers={"Last-Event-ID": "١٢".encode()})
    assert r.status_code == 422 and "Last-Event-ID" in r.text
