"""Found from outside (stop 32): the compliance report's blocked amounts. A deposit the
rules reject is not refused (money that arrives cannot be), it lands frozen; it was counted
as refused as well."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from satvault.rates.service import build_rate_service
from satvault.reports.service import period_report
from tests.chainenv import Env
from tests.risk.test_deposits import sanctioned_deposit_credited

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"ctr_threshold": "100", "rate_sources": "fixed"}


async def test_a_frozen_deposit_is_not_also_reported_as_refused(env: Env):
    await sanctioned_deposit_credited(env, 50_000)
    today = datetime.now(UTC).date()
    rates = build_rate_service("fixed", dict(env.settings.fixed_rates))
    async with env.sessions() as s:
        report, _ = await period_report(s, today, today, settings=env.settings, rates=rates)
    blocked = report["risk"]["blocked"]
    assert blocked["frozen_msat"] == 50_000 * SAT, blocked
    # Nothing was refused: the 50,000 sat arrived and are held frozen, counted once.
    assert (blocked["rejected_count"], blocked["rejected_msat"]) == (0, 0), blocked
