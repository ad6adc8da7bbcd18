"""``wallet.balance_changed``: written by the commit of any transaction that moved a wallet's
ledger account (one event per wallet, carrying the committed balances), never by one that
rolled back, never for platform accounts; and live on the wallet's event stream."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.events.models import OutboxEvent
from satvault.ledger.check import check_ledger
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_transfers, submit
from tests.events.conftest import serve
from tests.events.test_sse import events


async def ledger_ok(sessions) -> None:
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


async def balance_events(sessions, wallet_id: str | None = None) -> list[dict]:
    async with sessions() as s:
        q = select(OutboxEvent).where(OutboxEvent.type == "wallet.balance_changed")
        if wallet_id:
            q = q.where(OutboxEvent.subject_id == wallet_id)
        rows = (await s.execute(q.order_by(OutboxEvent.id))).scalars().all()
    return [json.loads(r.payload) | {"_wallet": r.wallet_id} for r in rows]


@pytest.fixture
async def two(sessions):
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        alice = await acc.create_user(s, email="alice@example.com")
        shop = await acc.create_merchant(s, name="Shop")
        aw = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        mw = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        _, key = await acc.create_api_key(s, owner_id=alice.id, scopes=["wallet:read"])
    return {"platform": platform, "alice": aw, "shop": mw, "key": key}


async def test_one_event_per_wallet_per_commit_with_committed_balances(sessions, two):
    p, aw, mw = two["platform"], two["alice"], two["shop"]
    assert await balance_events(sessions) == []
    # Two transfers into Alice's wallet and a hold on it in one transaction: one event.
    async with sessions() as s, s.begin():
        await create_transfers(s, [
            TransferSpec("d1", p.external.id, aw.ledger_account_id, 5_000, "BTC"),
            TransferSpec("d2", p.external.id, aw.ledger_account_id, 3_000, "BTC")])
        await create_transfers(s, [TransferSpec("h1", aw.ledger_account_id, p.clearing.id,
                                                1_000, "BTC", kind=TransferKind.PENDING)])
    (first,) = await balance_events(sessions)
    assert first == {"id": aw.id, "owner_type": "user", "owner_id": aw.owner_id,
                     "asset": "BTC", "unit": "msat", "available_msat": 7_000,
                     "posted_msat": 8_000, "incoming_msat": 0, "held_msat": 1_000,
                     "_wallet": aw.id}
    # A transfer between two wallets: an event for each.
    await submit(sessions, [TransferSpec("pay", aw.ledger_account_id, mw.ledger_account_id,
                                         2_000, "BTC")])
    got = {e["id"]: e for e in (await balance_events(sessions))[1:]}
    assert got[aw.id]["posted_msat"] == 6_000 and got[aw.id]["available_msat"] == 5_000
    assert got[mw.id]["posted_msat"] == 2_000 and len(got) == 2
    await ledger_ok(sessions)


async def test_no_event_after_rollback_refusal_or_platform_only_moves(sessions, two):
    p, aw = two["platform"], two["alice"]
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            await create_transfers(s, [TransferSpec("gone", p.external.id,
                                                    aw.ledger_account_id, 9, "BTC")])
            raise RuntimeError("the caller changes its mind")
    # Refused for lack of funds: nothing moved, nothing to report.
    (refused,) = await submit(sessions, [TransferSpec("broke", aw.ledger_account_id,
                                                      p.fees.id, 1, "BTC")])
    assert not refused.ok
    await submit(sessions, [TransferSpec("plat", p.external.id, p.fees.id, 50, "BTC")])
    # An idempotent replay of a transfer already made moves nothing either.
    await submit(sessions, [TransferSpec("d", p.external.id, aw.ledger_account_id, 7, "BTC")])
    await submit(sessions, [TransferSpec("d", p.external.id, aw.ledger_account_id, 7, "BTC")])
    assert [e["posted_msat"] for e in await balance_events(sessions)] == [7]
    await ledger_ok(sessions)


async def test_wallet_stream_shows_balance_changes_live(make_app, sessions, two):
    p, aw = two["platform"], two["alice"]
    async with (serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client,
                events(client, params={"wallet_id": aw.id},
                       headers={"Authorization": f"Bearer {two['key']}"}) as take):
        await submit(sessions, [TransferSpec("live", p.external.id, aw.ledger_account_id,
                                             4_000, "BTC")])
        (got,) = await take(1)
        assert got["event"] == "wallet.balance_changed"
        assert got["data"]["data"]["available_msat"] == 4_000
        r = await client.get(f"/api/v1/wallets/{aw.id}",
                             headers={"Authorization": f"Bearer {two['key']}"})
        # The event carries the wallet view's balances; the view adds the KYC tier, limits
        # and freeze, which no balance change moves.
        view = r.json()
        assert got["data"]["data"] == {k: view[k] for k in got["data"]["data"]}
        assert {"kyc_tier", "limits", "frozen"} <= set(view)


async def test_concurrent_transfers_each_report_their_own_committed_balance(sessions, two):
    """Twenty transfers into one wallet at once, each in its own transaction: twenty events,
    and the posted balances they carry are exactly the running totals 1,000 times 1 to 20 (each
    event saw its own commit's balance, never a neighbour's half-done one)."""
    import asyncio

    p, aw = two["platform"], two["alice"]
    outcomes = await asyncio.gather(*(submit(sessions, [TransferSpec(
        f"c{i}", p.external.id, aw.ledger_account_id, 1_000, "BTC")]) for i in range(20)))
    assert all(o.ok for (o,) in outcomes)
    posted = sorted(e["posted_msat"] for e in await balance_events(sessions, aw.id))
    assert posted == [1_000 * n for n in range(1, 21)]
    await ledger_ok(sessions)
