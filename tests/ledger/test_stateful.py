"""A hypothesis state machine drives the real ledger (store + database) next to a deliberately
simple in-memory model and compares them after every step, then runs the ledger check."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from satvault.db import create_engine, session_factory, utcnow
from satvault.ledger.check import check_ledger
from satvault.ledger.core import AccountKind, Result, TransferKind, TransferSpec
from satvault.ledger.store import create_account, expire_due_holds, get_accounts, submit

_runs = itertools.count()
N_WALLETS = 3


def make_machine(db_url: str) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.engine = create_engine(db_url, pool_size=2)
            self.sessions = session_factory(self.engine)
            self.run = next(_runs)
            self.now = utcnow()
            self.ids = itertools.count()
            # The model: balances as [dp, cp, dq, cq] per account, transfers by id.
            self.bal: dict[int, list[int]] = {}
            self.wallet_ids: list[int] = []
            self.world = 0
            self.transfers: dict[str, tuple] = {}
            self.failed: set[str] = set()
            self.holds: dict[str, dict] = {}

        def teardown(self) -> None:
            self.loop.run_until_complete(self.engine.dispose())
            self.loop.close()

        def _go(self, coro):
            return self.loop.run_until_complete(coro)

        @initialize()
        def setup(self) -> None:
            async def mk():
                async with self.sessions() as s, s.begin():
                    world = await create_account(s, name=f"sm{self.run}:world", asset="BTC",
                                                 kind=AccountKind.EXTERNAL)
                    wallets = [await create_account(
                        s, name=f"sm{self.run}:w{i}", asset="BTC",
                        kind=AccountKind.CUSTOMER_WALLET, debits_must_not_exceed_credits=True)
                        for i in range(N_WALLETS)]
                return world, wallets
            world, wallets = self._go(mk())
            self.world = world.id
            self.wallet_ids = [w.id for w in wallets]
            for a in (self.world, *self.wallet_ids):
                self.bal[a] = [0, 0, 0, 0]

        # -------------------------------------------------------------- model helpers
        def _avail(self, a: int) -> int:
            dp, cp, dq, _ = self.bal[a]
            return cp - dp - dq

        def _submit(self, specs):
            return self._go(submit(self.sessions, specs, now=self.now))

        def _expect_new(self, tid, d, c, amount, pending, timeout):
            if tid in self.failed:
                return Result.ID_ALREADY_FAILED
            if tid in self.transfers:
                same = self.transfers[tid] == (d, c, amount, pending, timeout)
                return Result.EXISTS if same else Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
            if d != self.world and self._avail(d) < amount:
                return Result.EXCEEDS_CREDITS
            return Result.CREATED

        # ---------------------------------------------------------------------- rules
        @rule(who=st.integers(0, N_WALLETS - 1), amount=st.integers(1, 5_000))
        def deposit(self, who, amount):
            self.transfer(-1, who, amount, False, None)

        @rule(src=st.integers(-1, N_WALLETS - 1), dst=st.integers(0, N_WALLETS - 1),
              amount=st.integers(1, 3_000), pending=st.booleans(),
              timeout=st.sampled_from([0, 0, 30, 300]),
              reuse=st.none() | st.integers(0, 10**6))
        def transfer(self, src, dst, amount, pending, reuse, timeout=0):
            d = self.world if src < 0 else self.wallet_ids[src]
            c = self.wallet_ids[dst]
            if d == c:
                return
            known = sorted(self.transfers) + sorted(self.failed)
            if reuse is not None and known:
                tid = known[reuse % len(known)]
            else:
                tid = f"sm{self.run}:t{next(self.ids)}"
            timeout = timeout if pending else 0
            expected = self._expect_new(tid, d, c, amount, pending, timeout)
            kind = TransferKind.PENDING if pending else TransferKind.SINGLE
            (o,) = self._submit([TransferSpec(tid, d, c, amount, "BTC", kind=kind,
                                              timeout_seconds=timeout)])
            if expected is Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID:
                assert o.result.value.startswith("exists_with_different"), o
                return
            assert o.result is expected, (o, expected)
            if expected is Result.EXCEEDS_CREDITS:
                self.failed.add(tid)
            if expected is not Result.CREATED:
                return
            self.transfers[tid] = (d, c, amount, pending, timeout)
            if pending:
                self.bal[d][2] += amount
                self.bal[c][3] += amount
                self.holds[tid] = {"d": d, "c": c, "amount": amount, "state": "pending",
                                   "expires": self.now + timedelta(seconds=timeout)
                                   if timeout else None}
            else:
                self.bal[d][0] += amount
                self.bal[c][1] += amount

        @precondition(lambda self: any(h["state"] == "pending" for h in self.holds.values()))
        @rule(pick=st.integers(0, 10**6), post=st.booleans(), part=st.integers(1, 100))
        def resolve(self, pick, post, part):
            open_ = sorted(k for k, h in self.holds.items() if h["state"] == "pending")
            hid = open_[pick % len(open_)]
            h = self.holds[hid]
            amount = max(1, h["amount"] * part // 100)
            kind = TransferKind.POST if post else TransferKind.VOID
            (o,) = self._submit([TransferSpec(f"{hid}:r{next(self.ids)}", kind=kind,
                                              pending_id=hid, amount=amount if post else None)])
            if h["expires"] is not None and self.now >= h["expires"]:
                assert o.result is Result.PENDING_TRANSFER_EXPIRED, o
                return
            assert o.result is Result.CREATED, o
            d, c = h["d"], h["c"]
            self.bal[d][2] -= h["amount"]
            self.bal[c][3] -= h["amount"]
            if post:
                self.bal[d][0] += amount
                self.bal[c][1] += amount
            h["state"] = "posted" if post else "voided"

        @rule(seconds=st.integers(1, 400))
        def time_passes(self, seconds):
            self.now += timedelta(seconds=seconds)

            async def expire():
                async with self.sessions() as s, s.begin():
                    return await expire_due_holds(s, now=self.now)
            self._go(expire())
            for h in self.holds.values():
                if h["state"] == "pending" and h["expires"] is not None and \
                        self.now >= h["expires"]:
                    h["state"] = "expired"
                    self.bal[h["d"]][2] -= h["amount"]
                    self.bal[h["c"]][3] -= h["amount"]

        # ----------------------------------------------------------------- invariants
        @invariant()
        def matches_model(self):
            if not self.bal:
                return

            async def load():
                async with self.sessions() as s:
                    return await get_accounts(s, self.bal)
            stored = self._go(load())
            for a, expected in self.bal.items():
                assert list(stored[a].balances.as_tuple()) == expected, (a, expected)
                if a != self.world:
                    assert self._avail(a) >= 0

        @invariant()
        def books_balance(self):
            async def check():
                async with self.sessions() as s:
                    return await check_ledger(s)
            report = self._go(check())
            assert report.ok, report.as_dict()

    return LedgerMachine


def test_ledger_matches_model(db_url):
    run_state_machine_as_test(
        make_machine(db_url),
        settings=settings(max_examples=20, stateful_step_count=25, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
