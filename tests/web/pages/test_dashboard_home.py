"""``/dashboard``: a signed-in user's merchant accounts, and opening one from the page (a
user who signed up has none until then)."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.accounts.models import Merchant, Wallet
from satvault.audit.models import AuditEvent
from tests.web.pages.conftest import PASSWORD, csrf_of, sign_in

pytestmark = pytest.mark.asyncio


async def _merchants_of(sessions, user_id: str) -> list[Merchant]:
    async with sessions() as s:
        return list((await s.execute(select(Merchant).where(
            Merchant.owner_user_id == user_id))).scalars())


async def test_a_new_user_creates_a_merchant_account(browser, people, sessions):
    async with sessions() as s, s.begin():
        erin = (await acc.create_user(s, email="erin@example.com", password=PASSWORD)).id
    assert (await sign_in(browser, "erin@example.com")).status_code == 303
    page = await browser.get("/dashboard")
    assert "You have no merchant account yet." in page.text
    assert "Create a merchant account" in page.text

    refused = await browser.post("/dashboard/merchants", data={"name": "Erin's Eggs"})
    assert refused.status_code == 403
    blank = await browser.post("/dashboard/merchants",
                               data={"name": "   ", "csrf_token": csrf_of(page.text)})
    assert blank.status_code == 422 and 'role="alert"' in blank.text
    assert await _merchants_of(sessions, erin) == []

    made = await browser.post("/dashboard/merchants",
                              data={"name": "Erin's Eggs", "csrf_token": csrf_of(page.text)})
    assert made.status_code == 303
    [merchant] = await _merchants_of(sessions, erin)
    assert made.headers["location"] == f"/dashboard/m/{merchant.id}"
    assert merchant.name == "Erin's Eggs"
    assert (await browser.get(made.headers["location"])).status_code == 200
    listed = await browser.get("/dashboard")
    assert f'href="/dashboard/m/{merchant.id}"' in listed.text
    async with sessions() as s:
        assert (await s.execute(select(Wallet).where(
            Wallet.owner_type == "merchant", Wallet.owner_id == merchant.id))).scalar_one()
        entry = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "merchant.create",
            AuditEvent.object == merchant.id))).scalar_one()
        assert entry.actor == erin

    # It is Erin's: Alice neither sees it listed nor opens it.
    browser.cookies.clear()
    assert (await sign_in(browser, "alice@example.com")).status_code == 303
    assert merchant.id not in (await browser.get("/dashboard")).text
    assert (await browser.get(f"/dashboard/m/{merchant.id}")).status_code == 404


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded-then-text/plain"])
async def test_a_merchant_name_with_a_nul_is_refused_however_the_form_is_sent(
        browser, people, sessions, encoding):
    """The form parses multipart/form-data as well as urlencoded, and Starlette reads the first
    of two Content-Type headers: either way a NUL once reached the merchants table (a 500 on
    PostgreSQL, a stored NUL on SQLite). The edge guard refuses both, nothing is created."""
    assert (await sign_in(browser, "alice@example.com")).status_code == 303
    page = await browser.get("/dashboard")
    fields = {"name": "Evil\x00Shop", "csrf_token": csrf_of(page.text)}
    if encoding == "multipart":
        boundary = "dashboardboundary"
        body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                       f"{v}\r\n" for k, v in fields.items()) + f"--{boundary}--\r\n"
        headers = httpx.Headers([("Content-Type", f"multipart/form-data; boundary={boundary}")])
        expected = 422
    else:
        body = urlencode(fields)
        headers = httpx.Headers([("Content-Type", "application/x-www-form-urlencoded"),
                                 ("Content-Type", "text/plain")])
        expected = 400
    r = await browser.post("/dashboard/merchants", content=body.encode(), headers=headers)
    assert r.status_code == expected, r.text
    async with sessions() as s:
        assert [n for n in (await s.execute(select(Merchant.name))).scalars() if "\x00" in n] \
            == []


async def test_signed_out_the_form_goes_to_sign_in(browser, people, sessions):
    r = await browser.post("/dashboard/merchants", data={"name": "x"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/dashboard"
    async with sessions() as s:
        assert (await s.execute(select(Merchant).where(Merchant.name == "x"))).first() is None
