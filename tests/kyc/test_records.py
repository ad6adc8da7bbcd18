"""KYC records are history: the database refuses to change or delete one (both databases);
name screening against the loaded lists blocks an upgrade and opens a review item."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.kernel.errors import InvalidInput
from satvault.kyc import service as kyc
from satvault.kyc.models import KycRecord, ScreeningList
from satvault.kyc.screening import load_list, normalize, parse_csv, score, screen_name
from satvault.onchain.models import ReviewItem
from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import OVERRIDES, bench, problem


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return OVERRIDES


def _req(owner_id: str, decision: str = "approve", tier: int = 1,
         name: str = "Alice Example", reviewer: str = "ops") -> kyc.RecordRequest:
    return kyc.RecordRequest(owner_type="user", owner_id=owner_id, tier=tier,
                             decision=decision, full_name=name, documents=["doc://1"],
                             checks=["id-document"], reviewer=reviewer)


async def test_records_cannot_be_updated_or_deleted(sessions):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="alice@example.com")
        rec = await kyc.create_record(s, _req(user.id), max_tier=2, screening_threshold=88)
        rid = rec.id
    async with sessions() as s, s.begin():
        assert (await s.get(User, user.id)).kyc_tier == 1  # the cache, set by the approval
    for stmt in (update(KycRecord).where(KycRecord.id == rid).values(tier=2),
                 update(KycRecord).values(decision="approved"),
                 delete(KycRecord).where(KycRecord.id == rid),
                 text("DELETE FROM kyc_records")):
        async with sessions() as s:
            with pytest.raises(DBAPIError, match="insert-only"):
                async with s.begin():
                    await s.execute(stmt)
    async with sessions() as s:
        assert await kyc.tier_of(s, "user", user.id) == 1
        assert [r.tier for r in await kyc.history(s, "user", user.id)] == [1]
        # The tier is the records', not the cache's: a hand-edited users.kyc_tier moves nothing.
    async with sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == user.id).values(kyc_tier=2))
    async with sessions() as s:
        assert await kyc.tier_of(s, "user", user.id) == 1


def test_normal_form_and_score():
    assert normalize("  ÁLVAREZ-NÚÑEZ, José ") == normalize("jose alvarez nunez")
    assert normalize("Straße") == normalize("STRASSE")
    assert score(normalize("José Álvarez Núñez"), normalize("jose alvarez nunez")) == 100
    assert score(normalize("Jose Alvarez"), normalize("José Luis Álvarez")) >= 88
    assert score(normalize("Jose Alvares Nunez"), normalize("José Álvarez Núñez")) >= 88
    assert score(normalize("Josephine Baker"), normalize("José Álvarez Núñez")) < 60
    assert score(normalize("Jose Smith"), normalize("José Álvarez Núñez")) < 88
    assert parse_csv("name,reference\nA B,1\n,2\nC D,3\n") == [("A B", "1"), ("C D", "3")]
    assert parse_csv("Ivan Petrov\nJohn Doe\n") == [("Ivan Petrov", ""), ("John Doe", "")]
    with pytest.raises(InvalidInput):
        parse_csv("name,reference\n")


async def test_screening_hit_blocks_the_upgrade_and_opens_a_review_item(lnenv: LnEnv):
    env = lnenv
    async with env.sessions() as s, s.begin():
        assert await load_list(s, ScreeningList.SANCTIONS,
                               [("José Álvarez-Núñez", "OFAC-123"), ("Ivan Petrov", "")]) == 2
        assert await load_list(s, ScreeningList.PEP, [("Maria Schmidt", "PEP-9")]) == 1
    async with api_client(env) as c:
        k = await bench(env, c)
        for variant in ("JOSE ALVAREZ NUNEZ", "álvarez-núñez, josé", "Maria  SCHMIDT"):
            r = await k.record("approve", 1, name=variant)
            assert r.status_code == 201 and r.json()["decision"] == "blocked", r.text
            assert r.json()["screening_hits"][0]["score"] >= 88
        assert (await k.wallet())["kyc_tier"] == 0
        problem(await k.pay("internal", 10_001), 422, "kyc-limit-exceeded")
        r = await k.record("approve", 1, name="Josephine Baker")
        assert r.status_code == 201 and r.json()["decision"] == "approved", r.text
        assert r.json()["screening_hits"] == []
        assert (await k.wallet())["kyc_tier"] == 1
        r = await c.post("/api/v1/admin/kyc/screen", headers=k.admin,
                         json={"name": "Ivan  PETROV"})
        assert [h["list"] for h in r.json()["hits"]] == ["sanctions"]
        r = await c.post("/api/v1/admin/kyc/screen", headers=k.admin, json={"name": "Ivana X"})
        assert r.json()["hits"] == []
    async with env.sessions() as s:
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "kyc_screening_hit"))).scalars().all()
        assert len(items) == 3 and {i.subject for i in items} == {f"user:{k.user_id}"}
        assert {json.loads(i.details)["hits"][0]["list"] for i in items} == {"sanctions", "pep"}
        # Loading a list again replaces it.
    async with env.sessions() as s, s.begin():
        await load_list(s, ScreeningList.SANCTIONS, [("Someone Else", "")])
    async with env.sessions() as s:
        assert await screen_name(s, "José Álvarez Núñez", threshold=88) == []
        assert (await s.execute(select(func.count()).select_from(KycRecord))).scalar_one() == 4
