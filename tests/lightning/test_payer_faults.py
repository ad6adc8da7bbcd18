"""The node failing around a payment that may have left: an error from the node says nothing
about a payment it had already started, so the hold stays until the node's own record is
definite (the LNbits CVE-2024-34694 family). The simulator's LND is reached over HTTP through
a transport that ends the send stream with the error a real LND's gateway sends when the node
shuts down mid-payment."""

from __future__ import annotations

import json

import httpx
import pytest

from satvault.backends.lnd import LndBackend
from satvault.lightning.payments import LightningPayer
from tests.chainenv import LnEnv
from tests.lightning.test_lightning import customer_invoice, fund, pay_out, status

SAT = 1000
SHUTDOWN = {"error": {"code": 2, "message": "routerrpc server shutting down", "details": []}}


class _SendStreamBreaks(httpx.AsyncBaseTransport):
    """Passes every call to the node; the answer of ``/v2/router/send`` keeps only its first
    ``updates`` lines (the node has started the payment either way) and then ends with the
    gRPC error of a node shutting down."""

    def __init__(self, updates: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.updates = updates

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if request.url.path != "/v2/router/send":
            return resp
        lines: list[bytes] = []
        buf = b""
        async for chunk in resp.stream:  # type: ignore[union-attr]
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [line for line in done if line.strip()]
            if len(lines) >= max(self.updates, 1):
                break
        await resp.aclose()
        assert b"IN_FLIGHT" in lines[0], lines  # the node did start it
        body = b"".join(line + b"\n" for line in lines[:self.updates])
        return httpx.Response(200, headers={"content-type": "application/json"},
                              content=body + json.dumps(SHUTDOWN).encode() + b"\n")

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("updates", [1, 0], ids=["after-an-update", "before-any-update"])
async def test_node_error_while_a_payment_is_out_is_never_a_failure(lnenv: LnEnv, updates):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 80_000 * SAT)
    payment_hash = env.network.decode(bolt11).payment_hash
    env.network.script(payment_hash, "in_flight")  # the HTLC is out, the receiver holds it
    wd = await pay_out(env, bolt11)
    failing = LndBackend(env.lnd.url, transport=_SendStreamBreaks(updates))
    try:
        report = await LightningPayer(env.sessions, failing, env.settings).step()
    finally:
        await failing.close()
    assert (report.failed, report.retried) == (0, 0), report
    assert (await status(env, wd.id))[0] == "broadcast"
    assert (await env.balances())["held"] >= 80_000 * SAT
    # The node comes back; the payment it had in flight succeeds and is booked as sent.
    env.network.resolve(payment_hash, "succeed")
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "confirmed"
    b = await env.balances()
    assert b["held"] == 0 and b["available"] < (500_000 - 80_000) * SAT + 1, b
    await env.check()


async def test_node_error_with_no_payment_on_the_node_releases_the_hold(lnenv: LnEnv):
    """The other side of the rule: an error before the node recorded any payment (here the
    gateway answers for a node that never got the request) is a refusal, once the node
    confirms it has no such payment; the money goes back."""
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 80_000 * SAT)

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/router/send":
            return httpx.Response(500, json={"code": 2, "message": "invoice expired"})
        raise AssertionError(f"unexpected call {request.url.path}")

    class _RefuseSend(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v2/router/send":
                return refuse(request)
            return await self.inner.handle_async_request(request)  # track: the real node

        async def aclose(self) -> None:
            await self.inner.aclose()

    wd = await pay_out(env, bolt11)
    refusing = LndBackend(env.lnd.url, transport=_RefuseSend())
    try:
        report = await LightningPayer(env.sessions, refusing, env.settings).step()
    finally:
        await refusing.close()
    assert report.failed == 1, report
    assert (await status(env, wd.id))[0] == "failed"
    b = await env.balances()
    assert b["held"] == 0 and b["available"] == 500_000 * SAT, b
    await env.check()
