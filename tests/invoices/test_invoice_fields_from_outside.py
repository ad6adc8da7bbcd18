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
