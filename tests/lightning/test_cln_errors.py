"""An internal payment over the HTTP API with the Core Lightning backend, when the node
refuses to take our invoice off it: a clear refusal with nothing changed, not a 500."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.backends.cln import ClnBackend
from satvault.composition import Runtime
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.payouts.models import Withdrawal
from tests.backends.test_cln import _PaidMeanwhile
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund

SAT = 1000


def on_cln(env: LnEnv, server) -> tuple[ClnBackend, LnEnv]:
    """The environment with its Lightning backend on ``server``'s Core Lightning socket."""
    cln = ClnBackend(str(server.path))
    runtime = Runtime.build(env.settings, env.sessions, backend=env.runtime.backend,
                            signer=env.signer, lightning=cln)
    return cln, dataclasses.replace(env, runtime=runtime)


async def test_an_internal_payment_whose_delinvoice_fails_is_refused_unchanged(
        lnenv: LnEnv):
    env = lnenv
    with _PaidMeanwhile(env.network) as server:
        cln, with_cln = on_cln(env, server)
        runtime = with_cln.runtime
        carol = await env.wallet_for("carol@example.com")
        await fund(env, env.wallet, 100_000 * SAT)
        async with env.sessions() as s, s.begin():
            bill = await create_invoice(s, backend=cln, wallet=carol, amount_msat=5_000 * SAT)
            _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
                "wallet:read", "withdrawals:write"])
        async with api_client(with_cln) as c:
            r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                             headers={"Authorization": f"Bearer {token}",
                                      "Idempotency-Key": "cln-1"},
                             json={"destination": bill.bolt11})
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("payment-refused"), r.json()
        assert "off the node" in r.json()["detail"]
        async with env.sessions() as s:
            assert (await s.execute(select(Withdrawal))).first() is None
            status = (await s.execute(select(LnInvoice.status).where(
                LnInvoice.payment_hash == bill.payment_hash))).scalar_one()
            assert status == LnInvoiceStatus.OPEN
        assert (await env.balances())["available"] == 100_000 * SAT
        # The outside payment that raced us is credited to carol, once.
        assert await InvoiceListener(env.sessions, cln, node="cln").sweep() == 1
        await runtime.close()
    assert (await env.balances(carol))["available"] == 5_000 * SAT
    await env.check()


async def test_a_payment_xpay_refuses_with_an_unlisted_code_fails_once_the_node_agrees(
        lnenv: LnEnv):
    """Found from outside: an ``xpay`` error outside the adapter's table (here -1, the
    simulator's answer to a payment of the node's own invoice) was taken as "in flight";
    ``listpays`` then had no record, so the payer sent it again at every pass, its money held
    for good. Now it is a refusal, believed as every failure is only when the node's record
    agrees (none here): the withdrawal fails and its money is free again."""
    from satvault.simnet.ln.cln_rpc import ClnRpcServer
    from tests.lightning.test_lightning import customer_invoice, pay_out, status

    env = lnenv
    with ClnRpcServer(env.network) as server:
        _cln, with_cln = on_cln(env, server)
        runtime = with_cln.runtime
        await fund(env, env.wallet, 100_000 * SAT)
        own = customer_invoice(env, 5_000 * SAT, node="platform")  # not one satvault issued
        wd = await pay_out(with_cln, own)
        for _ in range(3):
            await runtime.payer.step()
        assert (await status(env, wd.id))[0] == "failed"
        assert (await env.balances())["available"] == 100_000 * SAT
        async with env.sessions() as s:
            from satvault.lightning.models import LnPayment
            attempts = (await s.execute(select(LnPayment))).scalars().all()
        assert len(attempts) == 1 and "refused" in (attempts[0].failure_reason or "")
        await runtime.close()
    await env.check()
