"""The subject of a case (an admin whose own withdrawal the rules held) may not decide it,
nor draft, write or file the suspicious-activity report about themselves (found from
outside, stop 32: filing is final, so the subject could bury the report with a made-up
reference)."""
from __future__ import annotations

import pytest

from satvault.risk import sar
from satvault.risk.errors import DeciderIsSubject
from tests.chainenv import Env
from tests.risk.test_case_races import held_withdrawals


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def test_the_subject_cannot_file_the_sar_about_their_own_case(env: Env):
    [(_wid, case_id)] = await held_withdrawals(env, 1)
    me = f"user:{env.wallet.owner_id}"
    with pytest.raises(DeciderIsSubject):
        async with env.sessions() as s, s.begin():
            await sar.generate_sar(s, case_id=case_id, actor=me)
    async with env.sessions() as s, s.begin():
        await sar.generate_sar(s, case_id=case_id, actor="user:ann")
    with pytest.raises(DeciderIsSubject):
        async with env.sessions() as s, s.begin():
            await sar.edit_narrative(s, case_id=case_id, actor=me,
                                     narrative="Nothing suspicious: a routine transfer.")
    with pytest.raises(DeciderIsSubject):
        async with env.sessions() as s, s.begin():
            await sar.file_sar(s, case_id=case_id, reference="N/A", actor=me)
    async with env.sessions() as s:
        assert (await sar.get_sar(s, case_id))["status"] == "draft"
    async with env.sessions() as s, s.begin():  # another admin files it
        await sar.file_sar(s, case_id=case_id, reference="FIU-2026-0042", actor="user:ann")
