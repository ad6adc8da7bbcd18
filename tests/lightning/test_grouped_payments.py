"""Internal payments of one payer group-committed (``satvault.kernel.grouped``): many at
once through the API come out exactly as one after another would, with group commit on and
off: never more paid than the balance holds, each refusal its own (a savepoint rolled back,
the others kept), a repeated Idempotency-Key paid once, the books balanced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from satvault.accounts import service as acc
from satvault.lightning.invoices import create_invoice
from tests.chainenv import LnEnv
from tests.lightning.test_lightning import fund

SAT = 1000


@asynccontextmanager
async def app_for(env: LnEnv, *, grouped: bool) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from satvault.web.app import create_app

    settings = env.settings.model_copy(
        update={"payment_group_commit": grouped, "rate_limit_create": "1000/second"})
    app = create_app(settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield app, c


@pytest.mark.parametrize("grouped", [True, False])
async def test_many_payments_of_one_payer_at_once_pay_what_the_balance_holds(lnenv: LnEnv,
                                                                            grouped: bool):
    env = lnenv
    await fund(env, env.wallet, 15_500 * SAT)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        bills = [await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                      amount_msat=1_000 * SAT) for _ in range(24)]
        mine = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                    amount_msat=1_000 * SAT)  # paying it moves nothing
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {token}"}
    # 24 bills for 15 affordable, the payer's own invoice, and one bill's request twice.
    requests = [(f"k-{i}", b.bolt11) for i, b in enumerate(bills)] + [
        ("own", mine.bolt11), ("k-0", bills[0].bolt11)]
    async with app_for(env, grouped=grouped) as (app, c):
        answers = await asyncio.gather(*(
            c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                   headers={**auth, "Idempotency-Key": key}, json={"destination": bolt11})
            for key, bolt11 in requests))
        units = app.state.grouped_units
    by_key: dict[str, list[httpx.Response]] = {}
    for (key, _), answer in zip(requests, answers, strict=True):
        by_key.setdefault(key, []).append(answer)
    assert all(a.status_code < 500 for a in answers), [a.text for a in answers]
    assert by_key["own"][0].status_code == 422 and "own wallet" in by_key["own"][0].text
    # The repeated key: one payment, the same answer twice (or the second told to wait).
    first, second = by_key["k-0"]
    assert first.status_code in (201, 422) and second.status_code in (first.status_code, 409)
    if second.status_code == first.status_code:
        assert second.json() == first.json()
    paid = {k for k, a in by_key.items() if a[0].status_code == 201}
    assert len(paid) == 15, sorted((k, a[0].status_code) for k, a in by_key.items())
    refused = [a[0] for k, a in by_key.items() if k.startswith("k-") and k not in paid]
    assert all(a.status_code == 422 for a in refused), [a.text for a in refused]
    balances = await env.balances()
    assert balances["available"] == 500 * SAT and balances["held"] == 0
    if grouped:  # the payments did wait for each other in groups
        assert units.groups >= 1 and units.grouped_units >= 2
    else:
        assert units is None
    await env.check()
