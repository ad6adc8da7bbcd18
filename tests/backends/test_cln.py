"""The `cln` adapter against the simulator's Core Lightning JSON-RPC socket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from satvault.backends.cln import ClnBackend
from satvault.backends.errors import BackendError, BackendUnavailable, TxRejected
from satvault.backends.lightning import InvoiceState, PaymentStatus
from satvault.simnet.ln.cln_rpc import ClnRpcServer
from satvault.simnet.ln.network import LnNetwork
from tests.simnet_ln.test_lnd_rest import lists_every_payment_in_pages
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


class _PaidMeanwhile(ClnRpcServer):
    """A node on which an invoice is paid from outside between our ``listinvoices`` and our
    ``delinvoice`` (the race cancel_invoice lives with): lightningd then answers 906."""

    def __init__(self, network: LnNetwork) -> None:
        super().__init__(network)
        delinvoice = self._methods["delinvoice"]

        async def paid_first(params: dict[str, Any]) -> Any:
            inv = self.network.invoice_by_label(self.node, str(params.get("label")))
            if inv is not None:
                await asyncio.to_thread(self.network.pay, "customer1", inv.bolt11)
            return await delinvoice(params)

        self._methods["delinvoice"] = paid_first


async def test_rpc_errors_of_every_call_are_backend_errors(net: LnNetwork, tmp_path) -> None:
    with _PaidMeanwhile(net) as server:
        cln = ClnBackend(str(server.path))
        inv = await cln.create_invoice(3_000, memo="paid meanwhile")
        with pytest.raises(TxRejected, match="906"):
            await cln.cancel_invoice(inv.payment_hash)
        looked = await cln.lookup_invoice(inv.payment_hash)
        assert looked is not None and looked.state is InvoiceState.SETTLED  # not deleted
        with pytest.raises(BackendError, match="-32602"):  # lightningd refused the params
            await cln.create_invoice(1_000, expiry=-5)
    gone = ClnBackend(str(tmp_path / "no-such-socket"))
    with pytest.raises(BackendUnavailable):
        await gone.get_info()


async def test_a_hung_xpay_is_unknown_after_the_deadline_never_failed(
        net: LnNetwork) -> None:
    """A node that stops answering during xpay: after the payment's own timeout and a grace
    satvault gives up waiting with BackendUnavailable (the payer records UNKNOWN and asks
    ``listpays`` later), never a failure that would release the hold."""
    with ClnRpcServer(net) as server:
        cln = ClnBackend(str(server.path), pay_grace_seconds=0.5)
        bill = net.create_invoice("customer2", 20_000, memo="hangs")
        net.script(bill.payment_hash, "hang_then_succeed", delay=0.2)
        with pytest.raises(BackendUnavailable, match="xpay"):
            await asyncio.wait_for(cln.pay(bill.bolt11, amount_msat=None,
                                           fee_limit_msat=5_000, timeout_seconds=1), 10)

        async def settled() -> bool:
            found = await cln.track_payment(bill.payment_hash)
            return found is not None and found.status is PaymentStatus.SUCCEEDED
        assert await asyncio.wait_for(_until(settled), 10)


async def _until(check: Any) -> bool:
    while not await check():
        await asyncio.sleep(0.05)
    return True


async def test_calls_lightningd_never_answers_hold_no_thread_and_no_socket(tmp_path) -> None:
    """A node that accepts calls and never answers: each call is given up at its deadline
    with its socket closed, so more hung calls than the process has worker threads neither
    exhaust them nor stay open (pyln-client's blocking read held a thread per call until the
    node answered or closed)."""
    open_now, accepted = 0, 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, accepted
        open_now, accepted = open_now + 1, accepted + 1
        try:
            while await reader.read(65536):
                pass  # read the request, answer nothing
        finally:
            open_now -= 1
            writer.close()

    path = tmp_path / "rpc"
    server = await asyncio.start_unix_server(silent, path=str(path))
    cln = ClnBackend(str(path), timeout=0.2)
    try:
        hung = 3 * (min(32, (os.cpu_count() or 1) + 4))  # more than the default executor's
        results = await asyncio.gather(*(cln.get_info() for _ in range(hung)),
                                       return_exceptions=True)
        assert all(isinstance(r, BackendUnavailable) and "no answer in 0.2 s" in str(r)
                   for r in results), results[:3]
        assert accepted == hung
        await eventually(lambda: open_now == 0)  # every given-up call closed its socket
        # the process's worker threads are free: a thread job runs at once
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 1.0) == 42
    finally:
        server.close()
        await server.wait_closed()


async def test_a_socket_path_longer_than_a_unix_address_holds_is_reached(
        net: LnNetwork, tmp_path) -> None:
    """lightning-dir paths can exceed the 108 bytes of a unix socket address: the socket is
    reached through its directory's descriptor (the node listens through a short link)."""
    deep = tmp_path.joinpath(*["d" * 40] * 3)
    deep.mkdir(parents=True)
    short = tmp_path / "s"
    short.symlink_to(deep)
    assert len(str(deep / "lightning-rpc")) > 108
    with ClnRpcServer(net, path=short / "lightning-rpc"):
        info = await ClnBackend(str(deep / "lightning-rpc")).get_info()
    assert info.pubkey == net.pubkey("platform")


async def test_an_answer_nested_past_the_parsers_limit_is_a_backend_error(tmp_path) -> None:
    """Found from outside (in LNURL answers, the same parse): JSON nested ~100k deep raised
    RecursionError, which the adapter's "broken reply" handler did not catch."""

    async def deep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"[" * 100_000 + b"]" * 100_000 + b"\n\n")
        await writer.drain()
        writer.close()

    path = tmp_path / "rpc"
    server = await asyncio.start_unix_server(deep, path=str(path))
    try:
        with pytest.raises(BackendError, match="nests too deep"):
            await ClnBackend(str(path), timeout=5).get_info()
    finally:
        server.close()
        await server.wait_closed()


async def test_list_payments_pages_through_listsendpays(cln: ClnBackend, net: LnNetwork) -> None:
    await lists_every_payment_in_pages(cln, net)
