"""``satvault demo``: the platform's walkthrough on a fresh embedded database.

Each capability adds its steps here, so a newcomer sees the whole platform work in one
command. Progress goes to stderr; the JSON summary is the caller's to print.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service as accounts
from satvault.composition import open_sessions
from satvault.config import DEFAULT_KYC_TIER_LIMITS_MSAT
from satvault.db import create_engine
from satvault.kyc import service as kyc
from satvault.ledger.check import check_ledger
from satvault.ledger.core import TransferKind, TransferSpec, available
from satvault.ledger.errors import InsufficientFunds
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account, submit, transfer
from satvault.migrate import upgrade
from satvault.onchain.models import DepositStatus
from satvault.payouts.models import WithdrawalMethod

__all__ = ["run_demo"]

SAT = 1000  # msat


def run_demo() -> dict[str, Any]:
    """Never touches the configured database: the walkthrough gets a new temporary one."""
    tmp = tempfile.mkdtemp(prefix="satvault-demo-")
    url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
    upgrade(url)
    return asyncio.run(_walkthrough(url))


async def _walkthrough(url: str) -> dict[str, Any]:
    engine = create_engine(url, pool_size=4)
    sessions = open_sessions(engine)
    summary: dict[str, Any] = {"database": url.split("///")[-1]}
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    ctx: dict[str, Any] = {}

    async def uow(work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions() as s, s.begin():
            return await work(s)

    async def setup() -> None:
        async def w(s: AsyncSession) -> None:
            ctx["platform"] = await ensure_platform_accounts(s, "BTC")
            merchant = await accounts.create_merchant(s, name="Demo Coffee", actor="demo")
            store = await accounts.create_store(s, merchant_id=merchant.id, name="Main street")
            customer = await accounts.create_user(s, email="alice@example.com", actor="demo")
            ctx["merchant_wallet"] = await accounts.ensure_wallet(
                s, owner_type="merchant", owner_id=merchant.id)
            ctx["customer_wallet"] = await accounts.ensure_wallet(
                s, owner_type="user", owner_id=customer.id)
            # The customer's identity was checked: KYC tier 1 (tier 0's limits are too small
            # for the withdrawals below).
            await kyc.create_record(s, kyc.RecordRequest(
                owner_type="user", owner_id=customer.id, tier=1, decision="approve",
                full_name="Alice Example", documents=["demo://passport"],
                checks=["id-document"], reviewer="demo-reviewer"),
                max_tier=max(DEFAULT_KYC_TIER_LIMITS_MSAT), screening_threshold=88)
            summary.update(merchant_id=merchant.id, store_id=store.id, customer_id=customer.id)
        await uow(w)

    async def deposit() -> None:
        p, cw = ctx["platform"], ctx["customer_wallet"]
        await submit(sessions, [TransferSpec(
            id="demo:deposit:1", debit_account_id=p.external.id,
            credit_account_id=cw.ledger_account_id, amount=100_000 * SAT, asset="BTC",
            code="deposit", ref="simulated top-up")])

    async def holds() -> None:
        p, cw = ctx["platform"], ctx["customer_wallet"]
        hold = dict(debit_account_id=cw.ledger_account_id, credit_account_id=p.clearing.id,
                    asset="BTC", kind=TransferKind.PENDING, code="withdrawal")
        await submit(sessions, [
            TransferSpec(id="demo:hold:1", amount=30_000 * SAT, **hold),
            TransferSpec(id="demo:hold:2", amount=20_000 * SAT, **hold),
        ])
        await submit(sessions, [
            TransferSpec(id="demo:post:1", kind=TransferKind.POST, pending_id="demo:hold:1",
                         amount=25_000 * SAT),
            TransferSpec(id="demo:void:2", kind=TransferKind.VOID, pending_id="demo:hold:2"),
        ])

    async def pay_merchant() -> None:
        p, cw, mw = ctx["platform"], ctx["customer_wallet"], ctx["merchant_wallet"]
        await submit(sessions, [
            TransferSpec(id="demo:pay:1", debit_account_id=cw.ledger_account_id,
                         credit_account_id=mw.ledger_account_id, amount=40_000 * SAT,
                         asset="BTC", linked=True, code="payment"),
            TransferSpec(id="demo:fee:1", debit_account_id=mw.ledger_account_id,
                         credit_account_id=p.fees.id, amount=400 * SAT, asset="BTC",
                         code="fee"),
        ])

    async def overdraft() -> None:
        cw, mw = ctx["customer_wallet"], ctx["merchant_wallet"]
        try:
            await uow(lambda s: transfer(s, TransferSpec(
                id="demo:too-much", debit_account_id=cw.ledger_account_id,
                credit_account_id=mw.ledger_account_id, amount=10**9 * SAT, asset="BTC")))
            summary["overdraft_refused"] = False
        except InsufficientFunds:
            summary["overdraft_refused"] = True

    async def check() -> None:
        report = await uow(lambda s: check_ledger(s))
        summary["ledger_check"] = "ok" if report.ok else [p.message for p in report.problems]
        cw, mw = ctx["customer_wallet"], ctx["merchant_wallet"]
        c = await uow(lambda s: get_account(s, cw.ledger_account_id))
        m = await uow(lambda s: get_account(s, mw.ledger_account_id))
        summary["customer_available_msat"] = available(c)
        summary["merchant_available_msat"] = available(m)

    async def onchain_setup() -> None:
        import secrets

        from satvault.composition import Runtime, register_signer_wallets
        from satvault.config import Settings
        from satvault.signer.core import HotSigner
        from satvault.signer.inprocess import InProcessSigner
        from satvault.simnet.chain import Chain
        from satvault.simnet.rpc import SimnetServer

        chain = Chain()
        server = SimnetServer(chain).start()
        # A throwaway 2-of-3 cold wallet: in production its keys are made on offline machines
        # (`satvault cold keygen`) and only the descriptor comes here.
        from embit import bip32
        from embit.descriptor.checksum import add_checksum
        from embit.networks import NETWORKS

        keys = []
        for _ in range(3):
            root = bip32.HDKey.from_seed(secrets.token_bytes(32),
                                         version=NETWORKS["regtest"]["xprv"])
            xpub = root.derive("m/48h/1h/0h/2h").to_public().to_string(
                version=NETWORKS["regtest"]["xpub"])
            keys.append(f"[{root.my_fingerprint.hex()}/48h/1h/0h/2h]{xpub}/<0;1>/*")
        cold = str(add_checksum(f"wsh(sortedmulti(2,{','.join(keys)}))"))
        settings = Settings(database_url=url, home=Path(url.split("///")[-1]).parent,
                            network="regtest", chain_backend="bitcoind",
                            bitcoind_url=server.url, cold_descriptor=cold,
                            sweep_min_confirmations=1, sweep_min_sat=0,
                            semicold_floor_sat=240_000)
        signer = InProcessSigner(HotSigner(secrets.token_bytes(64), "regtest",
                                           cold_descriptor=cold))
        async with sessions() as s, s.begin():
            await register_signer_wallets(s, signer, settings)
        from satvault.backends.lnd import LndBackend
        from satvault.simnet.ln.lnd_rest import LndRestServer
        from satvault.simnet.ln.network import LnNetwork

        network = LnNetwork()
        lnd = LndRestServer(network, node="platform").start()
        ctx.update(chain=chain, server=server, settings=settings, network=network, lnd=lnd,
                   runtime=Runtime.build(settings, sessions, signer=signer,
                                         lightning=LndBackend(lnd.url)))
        summary["simnet"] = server.url.split("@")[-1]

    async def onchain_deposit() -> None:
        from satvault.onchain.deposits import create_deposit, view_deposit

        rt, chain = ctx["runtime"], ctx["chain"]
        async with sessions() as s, s.begin():
            d = await create_deposit(s, wallet=ctx["customer_wallet"], settings=ctx["settings"],
                                     amount_msat=250_000 * SAT, description="demo top-up")
        summary["deposit_bip21"] = d.bip21
        summary["deposit_txid"] = chain.pay(d.bip21)
        await rt.watcher.step()
        chain.mine(1)
        await rt.watcher.step()
        async with sessions() as s:
            summary["deposit_status"] = (await view_deposit(s, d.request.id)).status

    async def sweep() -> None:
        rt, chain = ctx["runtime"], ctx["chain"]
        decision = await rt.sweeps.step()
        await rt.payouts.advance()
        chain.mine(1)
        await rt.watcher.step()
        report = await rt.payouts.advance()
        summary["sweep"] = {"to_semicold_sat": decision.to_semicold_sat,
                            "to_cold_sat": decision.to_cold_sat, "fee_sat": decision.fee_sat,
                            "confirmed": report.confirmed}

    async def onchain_withdraw() -> None:
        from satvault.onchain.descriptors import parse_wallet
        from satvault.payouts.service import request_withdrawal
        from satvault.signer.core import HotSigner

        rt, chain = ctx["runtime"], ctx["chain"]
        elsewhere = parse_wallet(HotSigner(b"\x07" * 64, "regtest").descriptors()["deposit"],
                                 "regtest").derive(0).address
        for amount in (60_000, 70_000, 80_000):
            async with sessions() as s, s.begin():
                await request_withdrawal(s, wallet=ctx["customer_wallet"],
                                         destination=elsewhere, amount_msat=amount * SAT,
                                         settings=ctx["settings"])
        report = await rt.payouts.step()
        chain.mine(1)
        await rt.watcher.step()
        report2 = await rt.payouts.step()
        summary["payout"] = {"batched": report.batched, "broadcast": report.broadcast,
                             "confirmed": report2.confirmed}

    async def lightning() -> None:
        from satvault.lightning.invoices import InvoiceListener, create_invoice
        from satvault.lightning.payments import request_ln_withdrawal, take_off_node

        rt, network = ctx["runtime"], ctx["network"]
        async with sessions() as s, s.begin():
            inv = await create_invoice(s, backend=rt.lightning, wallet=ctx["customer_wallet"],
                                       amount_msat=20_000 * SAT, memo="demo zap")
        network.pay("customer1", inv.bolt11)  # someone outside pays the customer's invoice
        await InvoiceListener(sessions, rt.lightning, node="demo",
                              deposit_screen=rt.deposit_screen).sweep()
        async with sessions() as s, s.begin():
            bill = await create_invoice(s, backend=rt.lightning,
                                        wallet=ctx["merchant_wallet"],
                                        amount_msat=5_000 * SAT, memo="coffee")
        taken = await take_off_node(sessions, wallet=ctx["customer_wallet"], bolt11=bill.bolt11,
                                    amount_msat=None, settings=ctx["settings"],
                                    backend=rt.lightning)
        async with sessions() as s, s.begin():
            internal = await request_ln_withdrawal(
                s, wallet=ctx["customer_wallet"], bolt11=bill.bolt11, amount_msat=None,
                settings=ctx["settings"], backend=rt.lightning, taken_off_node=taken)
        outside = network.create_invoice("customer2", 3_000 * SAT, memo="refund").bolt11
        async with sessions() as s, s.begin():
            await request_ln_withdrawal(s, wallet=ctx["customer_wallet"], bolt11=outside,
                                        amount_msat=None, settings=ctx["settings"],
                                        backend=rt.lightning)
        report = await rt.payer.step()
        summary["lightning"] = {"received_msat": 20_000 * SAT,
                                "internal_payment": internal.method,
                                "external_payments_succeeded": report.succeeded}

    steps = [
        ("create a merchant, a store and a customer", setup),
        ("credit the customer 100,000 sat", deposit),
        ("hold 30k + 20k sat; post 25k of the first, void the second", holds),
        ("pay the merchant 40k sat with a linked 1 % fee", pay_merchant),
        ("refuse an overdraft", overdraft),
        ("start simnet (bitcoind JSON-RPC) and the signer; register xpub wallets",
         onchain_setup),
        ("deposit 250,000 sat on-chain: BIP21 → mempool → 1 confirmation → credited",
         onchain_deposit),
        ("sweep it: semi-cold up to its floor, the rest to a 2-of-3 cold wallet", sweep),
        ("three on-chain withdrawals: one batched payout, signed, broadcast, confirmed",
         onchain_withdraw),
        ("Lightning: receive 20k sat, pay the merchant inside the ledger, pay out 3k sat",
         lightning),
        ("run the ledger check", check),
    ]
    console = Console(stderr=True)
    started = time.perf_counter()
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("demo", total=len(steps))
            for label, step in steps:
                progress.update(task, description=label)
                await step()
                progress.advance(task)
                console.print(f"  [green]✓[/green] {label}")
    finally:
        if "runtime" in ctx:
            await ctx["runtime"].close()
            ctx["server"].stop()
            ctx["lnd"].stop()
        await engine.dispose()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["ok"] = bool(summary.get("ledger_check") == "ok" and summary.get("overdraft_refused")
                         and summary.get("deposit_status") == DepositStatus.PAID
                         and summary.get("sweep", {}).get("confirmed") == 1
                         and summary.get("payout", {}).get("confirmed") == 1
                         and summary.get("lightning", {}).get("internal_payment")
                         == WithdrawalMethod.INTERNAL
                         and summary["lightning"]["external_payments_succeeded"] == 1)
    return summary
