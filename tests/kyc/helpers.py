"""A KYC test bench over the Lightning environment: the payer's and an admin's API keys, a
payee with our own invoices, and one call per rail through the HTTP API."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx

from satvault.accounts import service as acc
from satvault.lightning.invoices import create_invoice
from tests.chainenv import LnEnv
from tests.lightning.test_lightning import fund
from tests.payouts.test_payouts import external_address

SAT = 1000
RAILS = ("onchain", "lightning", "internal")
# Small enough to cross in a test: [per transaction, 24 h, 30 d] in msat.
LIMITS = {0: {r: [10_000 * SAT, 20_000 * SAT, 50_000 * SAT] for r in RAILS},
          1: {r: [100_000 * SAT, 200_000 * SAT, 1_000_000 * SAT] for r in RAILS},
          2: {r: [10**15] * 3 for r in RAILS}}
# The races send 50 payments of one person at once: room for all of them in flight (the
# takes of our invoices are bounded per person, 16 by default: tests/lightning/test_takes.py).
OVERRIDES = {"kyc_tier_limits_msat": LIMITS, "rate_limit_create": "10000/second",
             "internal_payments_in_flight": 64}


@dataclass
class Bench:
    env: LnEnv
    c: httpx.AsyncClient
    payer: dict[str, str]
    admin: dict[str, str]
    admin_id: str
    payee: Any
    n: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def user_id(self) -> str:
        return self.env.wallet.owner_id

    async def destination(self, rail: str, sat: int) -> dict[str, Any]:
        if rail == "onchain":
            return {"destination": external_address(self.env, next(self.n) % 200),
                    "amount_msat": sat * SAT}
        if rail == "lightning":
            return {"destination": self.env.network.create_invoice("customer2",
                                                                   sat * SAT).bolt11}
        async with self.env.sessions() as s, s.begin():
            bill = await create_invoice(s, backend=self.env.runtime.lightning,
                                        wallet=self.payee, amount_msat=sat * SAT)
        return {"destination": bill.bolt11}

    async def send(self, body: dict[str, Any]) -> httpx.Response:
        return await self.c.post(f"/api/v1/wallets/{self.env.wallet.id}/withdrawals",
                                 headers={**self.payer, "Idempotency-Key": f"k{next(self.n)}"},
                                 json=body)

    async def pay(self, rail: str, sat: int) -> httpx.Response:
        return await self.send(await self.destination(rail, sat))

    async def record(self, decision: str, tier: int, name: str = "Alice Example",
                     owner: str | None = None, auth: dict[str, str] | None = None
                     ) -> httpx.Response:
        return await self.c.post(
            f"/api/v1/admin/kyc/user/{owner or self.user_id}/records", headers=auth or self.admin,
            json={"tier": tier, "decision": decision, "full_name": name,
                  "documents": ["docstore://passport/123"], "checks": ["id-document",
                                                                      "liveness"]})

    async def wallet(self) -> dict[str, Any]:
        r = await self.c.get(f"/api/v1/wallets/{self.env.wallet.id}", headers=self.payer)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def bench(env: LnEnv, c: httpx.AsyncClient, *, funds_sat: int = 10_000_000) -> Bench:
    await fund(env, env.wallet, funds_sat * SAT)
    payee = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        _, payer = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
        ops = await acc.create_user(s, email="ops@example.com", is_admin=True)
        _, admin = await acc.create_api_key(s, owner_id=ops.id, scopes=["admin"])
    return Bench(env, c, {"Authorization": f"Bearer {payer}"},
                 {"Authorization": f"Bearer {admin}"}, ops.id, payee)


def problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = dict(r.json())
    assert body["type"].endswith("/" + slug), body
    return body
