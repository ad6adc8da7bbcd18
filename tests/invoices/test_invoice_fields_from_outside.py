"""Invoice fields an outside review found stored as sent (stop 32): control characters in
the order id and the redirect URL (one line each, never meant to hold a newline), and a
tolerance written with an exponent, which the documented pattern does not allow."""

from __future__ import annotations

import pytest

from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.web.rows import row_counts


@pytest.mark.parametrize("field", [{"order_id": "A-1\nX-Injected: 1"},
                                   {"order_id": "A\x01"}, {"order_id": "A\x85"},
                                   # line separators, direction overrides, a BOM (stop 35)
                                   {"order_id": "A-1\u2028B"}, {"order_id": "\u202eA-1"},
                                   {"order_id": "\ufeffA-1"},
                                   {"redirect_url": "https://shop.example/\u2066back"},
                                   {"redirect_url": "https://shop.example/\r\nback"},
                                   {"redirect_url": "https://shop.example/\tok"},
                                   {"payment_tolerance_percent": "1e1"},
                                   # basis points are kept: more places were dropped silently
                                   {"payment_tolerance_percent": "0.015"},
                                   {"payment_tolerance_percent": 0.009},
                                   {"payment_tolerance_percent": " 5"}])
async def test_refused_with_a_422_and_nothing_stored(lnenv: LnEnv, shop, field):  # noqa: F811
    async with api_client(lnenv) as c:
        before = await row_counts(lnenv.sessions)
        r = await create(c, shop, "bad", amount="1000", currency="SATS",
                         payment_methods=["lightning"], **field)
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-request"), r.text
        assert await row_counts(lnenv.sessions) == before


async def test_one_line_values_and_plain_decimals_pass(lnenv: LnEnv, shop):  # noqa: F811
    async with api_client(lnenv) as c:
        r = await create(c, shop, "ok", amount="1000", currency="SATS",
                         payment_methods=["lightning"], order_id="Bestellung Nr. 7, Größe M",
                         redirect_url="https://shop.example/danke?o=7",
                         payment_tolerance_percent="2.5")
        assert r.status_code == 201, r.text
        assert r.json()["order_id"] == "Bestellung Nr. 7, Größe M"


async def test_an_invoice_above_the_lightning_cap_says_so(lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside: with both methods (the default), an invoice above the Lightning
    cap was refused as "amount_msat must be between 1 and …", a field the request has not;
    the refusal names the cap and what to ask for instead, and on-chain alone is created."""
    cap = lnenv.settings.ln_max_payment_msat
    sats = str(cap // 1000 + 1)
    async with api_client(lnenv) as c:
        before = await row_counts(lnenv.sessions)
        r = await create(c, shop, "big", amount=sats, currency="SATS")
        assert r.status_code == 422 and "Lightning" in r.json()["detail"], r.text
        assert '["onchain"]' in r.json()["detail"] and "amount_msat must" not in r.text
        after = await row_counts(lnenv.sessions)
        # Nothing but the refusal, kept with its Idempotency-Key (a replay answers the same).
        assert {k: v for k, v in after.items() if k != "idempotency_keys"} \
            == {k: v for k, v in before.items() if k != "idempotency_keys"}
        r = await create(c, shop, "big-onchain", amount=sats, currency="SATS",
                         payment_methods=["onchain"])
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("url", ["https://user:pass@evil.example/",
                                 "https://shop.example@evil.example",
                                 "https://@evil.example/", "http://shop.example:@evil.example",
                                 "https://shop.example\\@evil.example/", "https:///back"])
async def test_a_redirect_url_with_credentials_is_refused(lnenv: LnEnv, shop,  # noqa: F811
                                                          url):
    """Found from outside: ``https://shop.example@evil.example`` was stored and shown on the
    public checkout page as "Back to the shop", a link to evil.example that reads as the
    shop's (phishing). A redirect URL names its host with no credentials before it, as a
    webhook's does; nothing is stored."""
    async with api_client(lnenv) as c:
        before = await row_counts(lnenv.sessions)
        r = await create(c, shop, "cred", amount="1000", currency="SATS",
                         payment_methods=["lightning"], redirect_url=url)
        assert r.status_code == 422, r.text
        assert "redirect_url" in r.json()["detail"], r.text
        after = await row_counts(lnenv.sessions)
        assert {k: v for k, v in after.items() if k != "idempotency_keys"} \
            == {k: v for k, v in before.items() if k != "idempotency_keys"}
