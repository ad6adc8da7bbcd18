"""Refunds against a deliberately slow LNURL server (issue 9, money 1).

A refund to an LNURL resolves the destination over HTTP. That must happen before any
transaction opens (no invoice row lock, no SQLite writer held across the remote call), and the
``Idempotency-Key`` claim must be owned: a resend while the first request is alive is a 409,
however slow the first is; a claim is taken over only when its owner stopped beating, and the
old owner's transaction then rolls back instead of paying a second time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import func, select

from satvault.idempotency_models import IdempotencyKey
from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key, shop  # noqa: F401
from tests.waiting import eventually

SAT = 1000
METADATA = json.dumps([["text/plain", "refund"]])


class SlowLnurl:
    """An LNURL-pay service on a real local port whose first ``hold`` callbacks wait until
    the test releases them; invoices come from the simulated customer2 node."""

    def __init__(self, env: LnEnv, hold: int = 1) -> None:
        self.env = env
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()
        self.callbacks = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                base = f"http://127.0.0.1:{outer.port}"
                if url.path == "/pay":
                    body = {"tag": "payRequest", "callback": f"{base}/cb",
                            "minSendable": 1000, "maxSendable": 10**11, "metadata": METADATA}
                else:
                    outer.callbacks += 1
                    if outer.callbacks <= outer.hold:
                        outer.entered.set()
                        outer.release.wait(30)
                    msat = int(parse_qs(url.query)["amount"][0])
                    bolt11 = outer.env.network.create_invoice(
                        "customer2", msat, description_hash=hashlib.sha256(
                            METADATA.encode()).digest()).bolt11
                    body = {"pr": bolt11, "routes": []}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def destination(self) -> str:
        return f"lnurlp://127.0.0.1:{self.port}/pay"

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "the callback never came"


@pytest.fixture
def slow(lnenv: LnEnv) -> Iterator[SlowLnurl]:
    server = SlowLnurl(lnenv)
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()


async def refunds_of(env: LnEnv, invoice_id: str) -> int:
    async with env.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.invoice_id == invoice_id))).scalar_one())


@dataclass
class SlowRefund:
    """A refund of a paid invoice, sent with Idempotency-Key K to the slow LNURL server and
    held there (the server sits on the callback) until the test releases it."""

    inv: dict
    url: str
    headers: dict[str, str]
    body: dict
    first: asyncio.Task

    async def resend(self, c) -> httpx.Response:
        return await asyncio.wait_for(c.post(self.url, headers=self.headers, json=self.body),
                                      timeout=10)


async def start_slow_refund(c, env: LnEnv, shop, slow: SlowLnurl,  # noqa: F811
                            name: str) -> SlowRefund:
    refunder = await refunder_key(env, shop)
    inv = await paid_lightning_invoice(c, env, shop, name, sats=30_000)
    url = f"/api/v1/invoices/{inv['id']}/refunds"
    headers = {**refunder, "Idempotency-Key": "K"}
    body = {"destination": slow.destination, "amount_msat": 5_000 * SAT}
    first = asyncio.create_task(c.post(url, headers=headers, json=body))
    await slow.wait_entered()
    return SlowRefund(inv, url, headers, body, first)


async def test_slow_lnurl_refund_holds_no_lock_and_its_key_stays_owned(
        lnenv: LnEnv, shop, slow: SlowLnurl):  # noqa: F811
    env = lnenv
    async with api_client(env) as c:
        r = await start_slow_refund(c, env, shop, slow, "slow")
        inv = r.inv
        # While the LNURL server sits on the callback, another refund of the same invoice
        # goes through: nothing is locked across the remote call.
        other = await asyncio.wait_for(c.post(
            r.url, headers={**r.headers, "Idempotency-Key": "K2"},
            json={"destination": env.network.create_invoice("customer2", 4_000 * SAT).bolt11}),
            timeout=8)  # the old code waited for the LNURL client's 10 s timeout
        assert other.status_code == 201, other.text
        # The owner of K is alive (slow, not gone): a resend is told to wait.
        again = await r.resend(c)
        assert again.status_code == 409, again.text
        slow.release.set()
        done = await asyncio.wait_for(r.first, timeout=20)
        assert done.status_code == 201, done.text
        replay = await r.resend(c)
        assert replay.status_code == 201 and replay.json()["id"] == done.json()["id"]
        assert replay.headers["Idempotent-Replayed"] == "true"
    assert await refunds_of(env, inv["id"]) == 2
    await env.runtime.payer.step()
    await env.check()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {}


@pytest.mark.parametrize("settings_overrides", [{"idempotency_heartbeat_seconds": 0.05}])
async def test_a_live_owner_keeps_beating_past_the_stale_window(
        lnenv: LnEnv, shop, slow: SlowLnurl, clock):  # noqa: F811
    """Ten minutes (ten stale windows) pass while the LNURL server sits on the callback: the
    first request still beats, so it still owns its key."""
    env = lnenv
    async with api_client(env) as c:
        r = await start_slow_refund(c, env, shop, slow, "beat")
        inv = r.inv
        clock.advance(minutes=10)
        moved = clock.now()

        async def beaten_since_the_move() -> bool:
            async with env.sessions() as s:
                row = (await s.execute(select(IdempotencyKey).where(
                    IdempotencyKey.key == "K"))).scalar_one()
            return row.heartbeat_at >= moved

        await eventually(beaten_since_the_move)
        again = await r.resend(c)
        assert again.status_code == 409, again.text
        slow.release.set()
        assert (await asyncio.wait_for(r.first, timeout=20)).status_code == 201
    assert await refunds_of(env, inv["id"]) == 1
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"idempotency_heartbeat_seconds": 3600.0}])
async def test_a_taken_over_claim_rolls_the_old_owner_back(lnenv: LnEnv, shop,  # noqa: F811
                                                           slow: SlowLnurl, clock):
    """The first request's process stops beating (here: its next beat is an hour away) and
    five minutes pass. A resend takes the key over and refunds; when the first request
    finally finishes, its finishing UPDATE finds another owner's token and its transaction
    rolls back: one refund, paid once."""
    env = lnenv
    async with api_client(env) as c:
        r = await start_slow_refund(c, env, shop, slow, "take")
        inv = r.inv
        clock.advance(minutes=5)  # five stale windows; the BOLT11s have not expired
        second = await r.resend(c)
        assert second.status_code == 201, second.text
        slow.release.set()
        lost = await asyncio.wait_for(r.first, timeout=20)
        assert lost.status_code == 409, lost.text
        replay = await r.resend(c)
        assert replay.status_code == 201 and replay.json()["id"] == second.json()["id"]
    assert await refunds_of(env, inv["id"]) == 1
    await env.runtime.payer.step()
    async with env.sessions() as s:
        statuses = (await s.execute(select(Withdrawal.status).where(
            Withdrawal.invoice_id == inv["id"]))).scalars().all()
    assert statuses == ["confirmed"]
    await env.check()
