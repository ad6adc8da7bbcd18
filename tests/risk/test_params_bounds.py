"""A rule set's parameters are bounded by what the money columns hold: a structuring
threshold beyond the columns' integers is refused when the set is proposed, not found out when
every screening (so every withdrawal) fails against the database."""

from __future__ import annotations

import pytest

from satvault.kernel.errors import InvalidInput
from tests.risk.conftest import Ctx, default_doc

SAT = 1000


@pytest.mark.parametrize("threshold", [10**19, 10**40])
async def test_a_structuring_threshold_no_amount_can_reach_is_refused(ctx: Ctx, threshold):
    doc = default_doc()
    doc["params"] = {**doc.get("params", {}), "structuring_threshold_msat": threshold}
    with pytest.raises(InvalidInput, match="structuring_threshold_msat"):
        await ctx.live(doc)
    assert (await ctx.screen(ctx.event(1_000 * SAT))).outcome == "approve"
