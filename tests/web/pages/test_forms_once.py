"""Known gap closed (found from outside at stop 32): the dashboard's voucher and API-key
forms were not idempotent. Submitted twice (a double click, a page sent again), they made two
vouchers, each holding its amount, or two keys, and the first one's link or secret was never
shown. Each form now carries a key of its own (a hidden field, new with every rendering, as
the withdrawal and refund forms' are): the same form sent twice, one after the other or at
once, makes one; a form without its key is refused and makes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import ApiKey
from satvault.db import utcnow
from satvault.idempotency_models import IdempotencyKey, IdempotencyStatus
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from tests.web.pages.conftest import People, csrf_of
from tests.web.pages.merchant_helpers import signed_in, step_up
from tests.web.pages.test_merchant_lightning import _fund, _held

_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
_LNURL = re.compile(r"<code[^>]*data-secret>(LNURL1\w+)</code>")
_SECRET = re.compile(r"<code data-secret>([^<]+)</code>")


async def _form(browser: httpx.AsyncClient, path: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to ``action`` on the page at ``path``."""
    page = await browser.get(path)
    assert page.status_code == 200, page.text
    form = page.text[page.text.index(f'action="{action}"'):]
    form = form[:form.index("</form>")]
    key = _KEY.search(form)
    assert key, "the form carries no key of its own"
    return {"csrf_token": csrf_of(page.text), "idempotency_key": key.group(1)}


async def _count(sessions: async_sessionmaker[AsyncSession], model) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_voucher_form_sent_twice_makes_one_voucher(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _fund(sessions, people.alice_merchant, 50_000_000)
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    hidden = await _form(browser, base, f"{base}/vouchers")
    form = {**hidden, "amount_sat": "10000", "description": "Raffle prize"}

    first = await browser.post(f"{base}/vouchers", data=form)
    assert first.status_code == 201 and _LNURL.search(first.text), first.text
    again = await browser.post(f"{base}/vouchers", data=form)
    assert again.status_code == 200, again.text
    assert not _LNURL.search(again.text) and "already" in again.text
    async with sessions() as s:
        [voucher] = (await s.execute(select(LnurlWithdrawVoucher))).scalars().all()
    assert voucher.id in again.text  # the page names the one voucher made
    assert await _held(sessions, account) == voucher.amount_msat + voucher.reserve_msat

    # A double click: both at once, one voucher more.
    hidden = await _form(browser, base, f"{base}/vouchers")
    both = await asyncio.gather(*(browser.post(f"{base}/vouchers", data={**form, **hidden})
                                  for _ in range(2)))
    assert sorted(r.status_code for r in both) in ([200, 201], [201, 409]), \
        [(r.status_code, r.text[-300:]) for r in both]
    if 409 in (r.status_code for r in both):  # the second came while the first ran
        assert any("being sent already" in r.text for r in both)
    assert sum(bool(_LNURL.search(r.text)) for r in both) == 1
    assert await _count(sessions, LnurlWithdrawVoucher) == 2

    # Without its key (a form from elsewhere, or a page from before): refused, nothing made.
    r = await browser.post(f"{base}/vouchers", data={**form, "idempotency_key": ""})
    assert r.status_code == 422 and "Reload the page" in r.text
    assert await _count(sessions, LnurlWithdrawVoucher) == 2


async def test_a_refused_voucher_form_gets_a_new_key(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """The refusal's page is a new form: corrected and sent, it makes the voucher (the key of
    the refused one would only replay its refusal)."""
    await _fund(sessions, people.alice_merchant, 50_000_000)
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    hidden = await _form(browser, base, f"{base}/vouchers")
    r = await browser.post(f"{base}/vouchers", data={**hidden, "amount_sat": "99999999"})
    assert r.status_code in (409, 422), r.text
    fresh = _KEY.findall(r.text)
    assert fresh and hidden["idempotency_key"] not in fresh
    r = await browser.post(f"{base}/vouchers", data={**hidden, "idempotency_key": fresh[-1],
                                                     "amount_sat": "1000"})
    assert r.status_code == 201 and _LNURL.search(r.text), r.text


async def test_an_api_key_form_sent_twice_makes_one_key(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/keys"
    hidden = await _form(browser, base, base)
    form = {**hidden, "label": "till", "owner_id": store.id, "scopes": ["stores:read"]}

    first = await browser.post(base, data=form)
    assert first.status_code == 201 and _SECRET.search(first.text), first.text
    again = await browser.post(base, data=form)
    assert again.status_code == 200 and not _SECRET.search(again.text), again.text
    assert "already" in again.text
    async with sessions() as s:
        [key] = await acc.merchant_api_keys(s, people.alice_merchant)
    assert key.id in again.text

    hidden = await _form(browser, base, base)
    both = await asyncio.gather(*(browser.post(base, data={**form, **hidden})
                                  for _ in range(2)))
    assert sum(bool(_SECRET.search(r.text)) for r in both) == 1, \
        [(r.status_code, r.text[-300:]) for r in both]
    assert await _count(sessions, ApiKey) == 2

    r = await browser.post(base, data={**form, "idempotency_key": ""})
    assert r.status_code == 422 and "Reload the page" in r.text
    assert await _count(sessions, ApiKey) == 2


async def test_a_form_sent_while_its_first_sending_runs_says_so(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """The second of a double click can come while the first still runs: it makes nothing
    and says, for people, that the form is being sent (not the API's words)."""
    await _fund(sessions, people.alice_merchant, 50_000_000)
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    hidden = await _form(browser, base, f"{base}/vouchers")
    request = browser.build_request("POST", f"{base}/vouchers",
                                    data={**hidden, "amount_sat": "1000"})
    body = request.read()
    now = utcnow()
    async with sessions() as s, s.begin():  # the first sending, running in another process
        s.add(IdempotencyKey(
            owner=f"merchant:{people.alice_merchant}", key=hidden["idempotency_key"],
            request_hash=hashlib.sha256(f"POST {base}/vouchers\n".encode() + body).hexdigest(),
            status=IdempotencyStatus.RUNNING, created_at=now,
            expires_at=now + timedelta(hours=1), claim_token="the-first", heartbeat_at=now))
    r = await browser.send(request)
    assert r.status_code == 409 and "being sent already" in r.text, r.text
    assert "Idempotency-Key" not in r.text
    assert await _count(sessions, LnurlWithdrawVoucher) == 0
