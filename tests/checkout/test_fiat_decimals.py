"""The checkout page shows a fiat amount with the decimals the platform prices its currency
in, not CLDR's (found from outside: 1,234.567 IQD, three decimals in the platform's ISO 4217
table and none in CLDR's, showed as "IQD1,235", more than the invoice asked, and its rate as
"IQD123,750,000")."""

from __future__ import annotations

import pytest

from tests.chainenv import LnEnv
from tests.checkout.conftest import Shop, client, new_invoice


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_sources": "fixed",
            "fixed_rates": {"USD": "60000", "IQD": "123750000.000", "JPY": "9000000"}}


async def test_the_page_shows_the_invoiced_decimals(lnenv: LnEnv, shop: Shop):
    async with client(lnenv) as c:
        iqd = await new_invoice(c, shop, amount="1234.567", currency="IQD")
        jpy = await new_invoice(c, shop, amount="1500", currency="JPY")
        page = (await c.get(f"/i/{iqd['id']}", params={"lang": "en"})).text
        assert "1,234.567" in page and "1,235" not in page, page
        assert "123,750,000.000" in page
        yen = (await c.get(f"/i/{jpy['id']}", params={"lang": "en"})).text
        assert "1,500" in yen and "1,500.00" not in yen
