"""The `cln` adapter (pyln-client) against the simulator's Core Lightning JSON-RPC socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from satvault.backends.cln import ClnBackend
from satvault.backends.lightning import InvoiceState, PaymentStatus
from satvault.simnet.ln.cln_rpc import ClnRpcServer
from satvault.simnet.ln.network import LnNetwork
from tests.waiting import eventually


@pytest.fixture
def net() -> Iterator[LnNetwork]:
    n = LnNetwork()
    yield n
    n.close()


@pytest.fixture
def cln(net: LnNetwork) -> Iterator[ClnBackend]:
    with ClnRpcServer(net) as server:
        yield ClnBackend(str(server.path))


async def test_receive_through_waitanyinvoice(cln: ClnBackend, net: LnNetwork) -> None:
    info = await cln.get_info()
    assert info.network == "regtest" and info.pubkey == net.pubkey("platform") and info.synced
    net.set_synced("platform", False)  # lightningd reports a sync warning in getinfo
    assert not (await cln.get_info()).synced
    net.set_synced("platform", True)
    inv = await cln.create_invoice(12_000, memo="coffee", expiry=600)
    assert inv.bolt11.startswith("lnbcrt") and inv.state is InvoiceState.OPEN
    stream = cln.subscribe_invoices(settle_index=0)
    waiter = asyncio.ensure_future(stream.__anext__())
    # From settle index 0 nothing is replayed: pay once the stream is waiting.
    await eventually(lambda: net.invoice_subscribers("platform") == 1)
    net.pay("customer1", inv.bolt11)
    settled = await asyncio.wait_for(waiter, 10)
    assert settled.payment_hash == inv.payment_hash and settled.state is InvoiceState.SETTLED
    assert settled.paid_msat == 12_000 and settled.settle_index >= 1
    looked = await cln.lookup_invoice(inv.payment_hash)
    assert looked is not None and looked.state is InvoiceState.SETTLED
    assert await cln.lookup_invoice("ab" * 32) is None


async def test_send_success_failure_and_tracking(cln: ClnBackend, net: LnNetwork) -> None:
    good = net.create_invoice("customer2", 50_000, memo="via router")
    result = await cln.pay(good.bolt11, amount_msat=None, fee_limit_msat=5_000,
                           timeout_seconds=5)
    assert result.status is PaymentStatus.SUCCEEDED and result.fee_msat > 0
    tracked = await cln.track_payment(good.payment_hash)
    assert tracked is not None and tracked.status is PaymentStatus.SUCCEEDED
    bad = net.create_invoice("customer2", 50_000)
    net.script(bad.payment_hash, "fail:incorrect_payment_details")
    failed = await cln.pay(bad.bolt11, amount_msat=None, fee_limit_msat=5_000,
                           timeout_seconds=5)
    assert failed.status is PaymentStatus.FAILED
    assert await cln.track_payment("cd" * 32) is None
    decoded = await cln.decode(good.bolt11)
    assert decoded.payment_hash == good.payment_hash and decoded.amount_msat == 50_000


async def test_cancel_makes_an_invoice_unpayable(cln: ClnBackend, net: LnNetwork) -> None:
    inv = await cln.create_invoice(3_000, memo="to cancel")
    await cln.cancel_invoice(inv.payment_hash)
    outside = net.pay("customer1", inv.bolt11)
    assert outside.status.value.upper() == "FAILED"
    balances = await cln.balances()
    assert balances.channel_local_msat > 0
