"""Address allocation: fresh per request, never reused, look-ahead watched, recycling only of
addresses that never received anything (and the database refuses the rest)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from satvault.db import utcnow
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account
from satvault.onchain.deposits import create_deposit
from satvault.onchain.models import OnchainAddress, OnchainWallet, ReviewItem
from satvault.onchain.service import allocate_address, expire_addresses
from tests.chainenv import Env
from tests.test_cli import sv_here

SAT = 1000


async def test_fresh_address_per_request_even_concurrently(env: Env):
    async def one():
        async with env.sessions() as s, s.begin():
            return (await create_deposit(s, wallet=env.wallet, settings=env.settings)).address

    from satvault.kernel.retrying import retrying

    addrs = await asyncio.gather(*(retrying(env.sessions, lambda s: create_deposit(
        s, wallet=env.wallet, settings=env.settings)) for _ in range(20)))
    addrs = [a.address for a in addrs] + [await one()]
    assert len(set(addrs)) == 21
    async with env.sessions() as s:
        w = (await s.execute(select(OnchainWallet).where(OnchainWallet.role == "deposit"))
             ).scalar_one()
        window = (await s.execute(select(OnchainAddress.idx).where(
            OnchainAddress.wallet_id == w.id, OnchainAddress.chain == 0))).scalars().all()
        handed_out = (await s.execute(select(OnchainAddress.idx).where(
            OnchainAddress.wallet_id == w.id, OnchainAddress.chain == 0,
            OnchainAddress.status == "allocated"))).scalars().all()
    assert sorted(handed_out) == list(range(21))  # the pool is claimed lowest index first
    assert w.next_receive == max(window) + 1  # the next index the pool derives
    assert max(window) == 20 + env.settings.gap_limit  # look-ahead kept ahead of the last one


async def test_recycling_only_unpaid_and_old_enough(env: Env):
    async with env.sessions() as s, s.begin():
        old = await allocate_address(s, owner_type="user", owner_id="u1", purpose="deposit",
                                     request_id=None, expires_at=utcnow() - timedelta(days=40))
        paid = await allocate_address(s, owner_type="user", owner_id="u1", purpose="deposit",
                                      request_id=None, expires_at=utcnow() - timedelta(days=40))
        fresh = await allocate_address(s, owner_type="user", owner_id="u1", purpose="deposit",
                                       request_id=None, expires_at=utcnow() - timedelta(days=1))
    env.chain.pay(paid.address, 5_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    async with env.sessions() as s, s.begin():
        assert await expire_addresses(s) == 2  # the paid one is "used", never "expired"
    async with env.sessions() as s, s.begin():
        again = await allocate_address(s, owner_type="user", owner_id="u2", purpose="deposit",
                                       request_id=None, recycle_after=timedelta(days=30))
        after = await allocate_address(s, owner_type="user", owner_id="u2", purpose="deposit",
                                       request_id=None, recycle_after=timedelta(days=30))
    assert again.recycled and again.address == old.address
    assert not after.recycled and after.address not in (paid.address, fresh.address)
    async with env.sessions() as s:
        with pytest.raises(IntegrityError):
            async with s.begin():
                await s.execute(text("UPDATE onchain_addresses SET status = 'expired' "
                                     "WHERE address = :a"), {"a": paid.address})


async def test_payment_to_unallocated_lookahead_address_is_kept_and_flagged(env: Env):
    async with env.sessions() as s:
        w = (await s.execute(select(OnchainWallet).where(OnchainWallet.role == "deposit"))
             ).scalar_one()
        spare = (await s.execute(select(OnchainAddress).where(
            OnchainAddress.wallet_id == w.id, OnchainAddress.idx == 7))).scalar_one()
    assert spare.status == "lookahead"
    env.chain.pay(spare.address, 12_345)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    async with env.sessions() as s, s.begin():
        reviews = (await s.execute(select(ReviewItem))).scalars().all()
        equity = await get_account(s, (await ensure_platform_accounts(s, "BTC")).equity.id)
    assert [r.kind for r in reviews] == ["deposit_unassigned"]
    assert json.loads(reviews[0].details)["sat"] == 12_345
    assert equity.balances.credits_posted == 12_345 * SAT  # never lost
    assert (await env.balances())["available"] == 0
    await env.check()


def test_cli_addresses_matches_bip84_and_refuses_private_keys(tmp_path):
    zpub = ("zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868Rv"
            "UUkgDKf31mGDtKsAYz2oz2AGutZYs")

    def run(*args: str) -> Any:  # in this process: the command, not its process, is tested
        return sv_here("onchain", "addresses", *args, url=f"sqlite:///{tmp_path / 'x.db'}",
                       home=tmp_path, check=False)

    out = run(zpub, "--count", "2", "--network", "mainnet")
    assert out.returncode == 0, (out.stdout, out.stderr)
    rows = json.loads(out.stdout.strip().splitlines()[-1])["addresses"]
    assert [r["address"] for r in rows] == ["bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu",
                                            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"]
    change = run(zpub, "--count", "1", "--change", "--network", "mainnet")
    assert change.returncode == 0, (change.stdout, change.stderr)
    assert "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el" in change.stdout
    wrong = run(zpub, "--network", "regtest")
    assert wrong.returncode == 1 and "mainnet" in wrong.stdout
    xprv = ("xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5k"
            "ejMRNNU3TGtRBeJgk33yuGBxrMPHi")
    priv = run(xprv)
    assert priv.returncode == 1 and "PRIVATE" in priv.stdout
