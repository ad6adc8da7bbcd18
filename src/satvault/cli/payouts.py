"""``satvault payouts …``: look at payouts, bump an unconfirmed one's fee (RBF) and resolve a
``stuck`` one (:mod:`satvault.reconcile.stuck`); ``bump`` and ``resolve`` refuse a chain node
of another network than ``SATVAULT_NETWORK``."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.cli._common import (
    DemoSignerFlag,
    admin_actor,
    emit,
    on_network,
    refuse_demo_signer,
    run,
    with_database,
)
from satvault.composition import Runtime, open_database
from satvault.config import get_settings
from satvault.migrate import ensure_current
from satvault.payouts.models import BatchStatus, PayoutBatch, Withdrawal
from satvault.reconcile import stuck

__all__ = ["app"]

app = typer.Typer(help="On-chain payouts (batched withdrawals).", no_args_is_help=True)


class Rest(StrEnum):
    """With ``--paid-by``: what becomes of the withdrawals TXID does not pay."""

    REQUEUE = "requeue"
    RETURN = "return"


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


@app.command("list")
def list_payouts(
    status: Annotated[BatchStatus | None, typer.Option(help="Only batches in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Recent payout batches with their withdrawals."""
    async def go() -> list[dict[str, Any]]:
        engine, sessions = open_database(get_settings(), pool_size=1)
        try:
            await ensure_current(engine)
            async with sessions() as s:
                q = select(PayoutBatch).order_by(PayoutBatch.created_at.desc()).limit(limit)
                if status:
                    q = q.where(PayoutBatch.status == status)
                out = []
                for b in (await s.execute(q)).scalars():
                    wds = (await s.execute(select(Withdrawal.id, Withdrawal.amount_msat).where(
                        Withdrawal.batch_id == b.id))).all()
                    out.append({"id": b.id, "status": b.status, "txid": b.txid,
                                "fee_sat": b.fee_sat, "feerate_sat_vb": b.feerate_sat_vb,
                                "last_error": b.last_error,
                                "withdrawals": [{"id": i, "amount_msat": a} for i, a in wds]})
                return out
        finally:
            await engine.dispose()

    payouts = run(go)
    _emit({"ok": True, "payouts": payouts})


@app.command("bump")
def bump(
    batch_id: Annotated[str, typer.Argument(help="Payout batch id (pob_…).")],
    feerate: Annotated[int, typer.Option(min=1, help="New feerate in sat/vB.")],
    demo_signer: DemoSignerFlag = False,
) -> None:
    """Replace an unconfirmed payout by one paying the same withdrawals at a higher feerate."""
    settings = get_settings()
    refuse_demo_signer(settings, demo_signer)

    async def go() -> str:
        engine, sessions = open_database(settings, pool_size=2)
        runtime = Runtime.build(settings, sessions)
        try:
            await ensure_current(engine)
            await on_network(runtime.backend, settings, runtime.network_guard)
            return await runtime.payouts.bump_fee(batch_id, feerate)
        finally:
            await runtime.close()
            await engine.dispose()

    txid = run(go)
    _emit({"ok": True, "batch": batch_id, "txid": txid, "feerate_sat_vb": feerate})


@app.command("resolve")
def resolve(
    batch_id: Annotated[str, typer.Argument(help="A stuck payout batch's id (pob_…).")],
    as_: Annotated[str, typer.Option("--as", help="The acting admin's e-mail address or id.")],
    note: Annotated[str, typer.Option(help="What was done and why (required, audited).")],
    requeue: Annotated[bool, typer.Option(
        "--requeue", help="Give the batch up; its withdrawals are paid again later.")] = False,
    return_: Annotated[bool, typer.Option(
        "--return", help="Give the batch up and cancel its withdrawals (holds voided).")]
    = False,
    paid_by: Annotated[str | None, typer.Option(
        "--paid-by", metavar="TXID",
        help="A confirmed transaction that paid every withdrawal of the batch (or some, "
             "with --rest).")] = None,
    rest: Annotated[Rest | None, typer.Option(
        help="With --paid-by TXID paying only some of the withdrawals: book those, and "
             "re-queue or return the rest.")] = None,
    demo_signer: DemoSignerFlag = False,
) -> None:
    """Resolve a stuck payout batch, only as far as the chain proves it safe (nothing is
    changed otherwise): see docs/operations.md, "Resolving a stuck batch"."""
    chosen = [a for a, on in (("requeue", requeue), ("return", return_),
                              ("paid_by", paid_by is not None)) if on]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --requeue, --return, --paid-by TXID")
    if rest is not None and paid_by is None:
        raise typer.BadParameter("--rest goes with --paid-by TXID only")
    settings = get_settings()
    refuse_demo_signer(settings, demo_signer)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        runtime = Runtime.build(settings, sessions, lightning=None)
        try:
            await on_network(runtime.backend, settings, runtime.network_guard)
            async with sessions() as s:
                actor = await admin_actor(s, as_)
            proof = await stuck.prepare(sessions, backend=runtime.backend,
                                        signer=runtime.signer, settings=settings,
                                        batch_id=batch_id, action=chosen[0], note=note,
                                        actor=actor, txid=paid_by,
                                        rest=None if rest is None else rest.value)
            async with sessions() as s, s.begin():
                return await stuck.resolve(s, proof, actor=actor, note=note)
        finally:
            await runtime.close()

    emit({"ok": True, **with_database(work, settings)})
