"""A withdrawal policy's values are bounded by where they are used: a rule reading the wallet's
withdrawals over more hours than a date can go back, or holding withdrawals for more approvals
or a longer group name than the approval request's columns hold, is refused when proposed,
not found out when every withdrawal it matches fails (a 500)."""

from __future__ import annotations

import pytest

from satvault.payouts.models import WithdrawalStatus
from satvault.withdrawals.policy.errors import InvalidPolicy
from tests.chainenv import Env
from tests.payouts.test_payouts import external_address, fund
from tests.policy.support import make_live, people, request


@pytest.mark.parametrize(("rule", "message"), [
    ({"action": "block", "window_hours": 10**8, "window_min_sum_msat": 1}, "window_hours"),
    ({"action": "block", "window_hours": 10**12, "window_min_sum_msat": 1}, "window_hours"),
    ({"action": "require_approval", "approvals": 2**31, "group": "treasury"}, "approvals"),
    ({"action": "require_approval", "approvals": 1, "group": "t" * 61}, "group"),
])
async def test_values_no_column_or_date_can_hold_are_refused_and_withdrawals_go_on(
        env: Env, rule, message):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    with pytest.raises(InvalidPolicy, match=message):
        await make_live(env.sessions, who, [{"name": "odd", **rule}])
    await fund(env, 500_000)
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       10_000, initiator=alice)
    assert wd.status == WithdrawalStatus.PENDING
