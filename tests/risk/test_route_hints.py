"""A Lightning payment is screened against every node its invoice names: the payee, and the
nodes of its route hints, through which the payment must pass to reach a private payee. A
listed node cannot be paid by issuing invoices from a fresh private node behind it."""

from __future__ import annotations

import os
import time

import bolt11
from bolt11 import Bolt11, MilliSatoshi, Route, RouteHint, TagChar, Tags
from coincurve import PrivateKey

from satvault.risk.lists import refresh_sanctions
from tests.lightning_lnurl.conftest import LnEnv, ln  # noqa: F401
from tests.lightning_lnurl.test_withdraw import FUND, redeem, voucher, withdrawals

HUB = "03" + "ab" * 32  # the listed node


def behind(hub: str, amount_msat: int) -> str:
    """An invoice of a fresh private node whose only way in is a channel with ``hub``."""
    tags = Tags()
    tags.add(TagChar.payment_hash, os.urandom(32).hex())
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    tags.add(TagChar.description, "behind the hub")
    tags.add(TagChar.expire_time, 3600)
    tags.add(TagChar.route_hint, RouteHint([Route(hub, "700000x1x0", 1000, 1, 40)]))
    invoice = Bolt11(currency="bcrt", date=int(time.time()), tags=tags,
                     amount_msat=MilliSatoshi(amount_msat))
    return bolt11.encode(invoice, PrivateKey().secret.hex())


async def test_a_listed_node_in_a_route_hint_is_refused(ln: LnEnv):  # noqa: F811
    await ln.fund("alice", FUND)
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"{HUB.upper()}\n", actor="user:admin")
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    r = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": "a"},
                             json={"destination": behind(HUB, 10_000)})
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith("/risk-rejected"), r.text
    refused = await redeem(ln, await voucher(ln, 20_000), behind(HUB, 20_000))
    # The decision is the operator's: the anonymous redeemer gets no reason (found from outside).
    assert refused["status"] == "ERROR" and "cannot be redeemed" in refused["reason"], refused
    assert await withdrawals(ln) == 0
    # Behind another hub, the same kind of invoice pays.
    r = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": "b"},
                             json={"destination": behind("02" + "cd" * 32, 10_000)})
    assert r.status_code == 201, r.text
