"""The lean store-invoice path (issue 10), through the HTTP API: pooled deposit addresses
claimed concurrently (SKIP LOCKED on PostgreSQL) are never handed out twice and the pool
refills; an Idempotency-Key's twins create one invoice; a store's settings or webhooks changed
behind the process's memory (as another process would) are honoured at once."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import func, select, text, update

from satvault.accounts.models import Store
from satvault.events.models import OutboxEvent, Webhook, WebhookDelivery
from satvault.events.service import create_webhook
from satvault.events.ssrf import check
from satvault.idempotency_models import IdempotencyKey
from satvault.invoices.models import StoreInvoice
from satvault.onchain.models import OnchainAddress, OnchainWallet
from satvault.onchain.service import POOL_EXTRA, top_up_pool, watched_scripts
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401


async def _receive_rows(env: LnEnv) -> list[OnchainAddress]:
    async with env.sessions() as s:
        wallet_id = (await s.execute(select(OnchainWallet.id).where(
            OnchainWallet.role == "deposit"))).scalar_one()
        return list((await s.execute(select(OnchainAddress).where(
            OnchainAddress.wallet_id == wallet_id, OnchainAddress.chain == 0)
            .order_by(OnchainAddress.idx))).scalars())


async def test_concurrent_invoices_get_distinct_pooled_addresses(lnenv: LnEnv,
                                                                 shop):  # noqa: F811
    env = lnenv
    n = 24  # more than the pool holds before any top-up (gap limit 20): some claims derive
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            create(c, shop, f"many-{i}", amount="1000", currency="SATS") for i in range(n)))
    assert [a.status_code for a in answers] == [201] * n, [a.text for a in answers]
    addresses = [a.json()["payment_methods"]["onchain"]["address"] for a in answers]
    assert len(set(addresses)) == n
    rows = await _receive_rows(env)
    handed_out = [r for r in rows if r.status == "allocated"]
    assert sorted(r.address for r in handed_out) == sorted(addresses)
    assert all(r.times_allocated == 1 for r in handed_out)  # none handed out twice
    # Every address handed out is followed by at least gap_limit derived (watched) ones.
    highest = max(r.idx for r in handed_out)
    assert max(r.idx for r in rows) >= highest + env.settings.gap_limit
    async with env.sessions() as s:
        watched = await watched_scripts(s)
    assert {bytes.fromhex(r.script_pubkey) for r in rows} <= set(watched)
    # The database refuses a second row for an address.
    async with env.sessions() as s:
        try:
            async with s.begin():
                await s.execute(text(
                    "INSERT INTO onchain_addresses (wallet_id, chain, idx, address, "
                    "script_pubkey, status, ever_received, times_allocated) VALUES "
                    "(:w, 0, 99999, :a, 'ff', 'lookahead', false, 0)"),
                    {"w": handed_out[0].wallet_id, "a": handed_out[0].address})
            raise AssertionError("a duplicate address was accepted")
        except Exception as exc:  # IntegrityError, wrapped by the driver
            assert "nique" in str(exc) or "UNIQUE" in str(exc), exc
    await env.check()


async def test_the_pool_refills_outside_requests_and_on_demand(lnenv: LnEnv,
                                                               shop):  # noqa: F811
    env = lnenv
    gap = env.settings.gap_limit
    assert len(await _receive_rows(env)) == gap  # registration derives the gap limit
    await env.runtime.watcher.step()  # the watcher tops the pool up
    rows = await _receive_rows(env)
    assert len(rows) == gap + POOL_EXTRA and all(r.status == "lookahead" for r in rows)
    async with env.sessions() as s, s.begin():
        assert await top_up_pool(s) == 0  # already deep enough
    async with api_client(env) as c:
        r = await create(c, shop, "one", amount="1000", currency="SATS")
        assert r.status_code == 201, r.text
        async with env.sessions() as s, s.begin():
            assert await top_up_pool(s) == 1  # one was claimed: one derived
        # Empty the pool behind the platform's back: a claim derives what it needs itself.
        async with env.sessions() as s, s.begin():
            await s.execute(update(OnchainAddress).where(OnchainAddress.status == "lookahead")
                            .values(status="expired"))
        r = await create(c, shop, "two", amount="1000", currency="SATS")
        assert r.status_code == 201, r.text
    rows = await _receive_rows(env)
    mine = next(x for x in rows
                if x.address == r.json()["payment_methods"]["onchain"]["address"])
    assert mine.idx == gap + POOL_EXTRA + 1  # the first one derived after the old pool
    assert max(x.idx for x in rows) == mine.idx + gap
    assert [x.status for x in rows if x.idx > mine.idx] == ["lookahead"] * gap
    await env.runtime.watcher.step()
    async with env.sessions() as s:
        pooled = (await s.execute(select(func.count()).select_from(OnchainAddress).where(
            OnchainAddress.status == "lookahead", OnchainAddress.chain == 0))).scalar_one()
    assert pooled == gap + POOL_EXTRA


async def test_twins_with_one_idempotency_key_create_one_invoice(lnenv: LnEnv,
                                                                 shop):  # noqa: F811
    env = lnenv
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            create(c, shop, "twin", amount="1000", currency="SATS") for _ in range(6)))
        assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
        assert len({a.text for a in answers}) == 1  # every twin answers with the one invoice
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 5
        later = await create(c, shop, "twin", amount="1000", currency="SATS")
        assert later.status_code == 201 and later.text == answers[0].text
        assert later.headers["Idempotent-Replayed"] == "true"
        other = await create(c, shop, "twin", amount="2000", currency="SATS")
        assert other.status_code == 422, other.text
        # A domain error is stored and replayed too.
        bad = await create(c, shop, "bad", amount="0.5", currency="SATS")
        assert bad.status_code == 422, bad.text
        again = await create(c, shop, "bad", amount="0.5", currency="SATS")
        assert again.status_code == 422 and again.content == bad.content
        assert again.headers["Idempotent-Replayed"] == "true"
    async with env.sessions() as s:
        invoices = (await s.execute(select(StoreInvoice.id))).scalars().all()
        created = (await s.execute(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.type == "invoice.created"))).scalar_one()
        keys = (await s.execute(select(IdempotencyKey.key, IdempotencyKey.response_status)
                                .order_by(IdempotencyKey.key))).all()
        allocated = (await s.execute(select(func.count()).select_from(OnchainAddress).where(
            OnchainAddress.status == "allocated"))).scalar_one()
    assert invoices == [answers[0].json()["id"]] and created == 1
    assert [tuple(k) for k in keys] == [("bad", 422), ("twin", 201)]
    assert allocated == 1  # the twins' claims rolled back with them
    await env.check()


async def test_store_changes_made_elsewhere_are_honoured_at_once(lnenv: LnEnv,
                                                                 shop):  # noqa: F811
    """Another process (here: a plain session) changes the spread, the default currency and
    the webhooks while this process remembers the store: the next invoice uses them all."""
    env = lnenv
    async with api_client(env) as c:
        first = await create(c, shop, "s1", amount="10.00", currency="USD")
        assert first.status_code == 201, first.text
        assert first.json()["rate"]["minor_units_per_btc"] == 6_000_000
        async with env.sessions() as s, s.begin():
            await s.execute(update(Store).where(Store.id == shop["store"])
                            .values(spread_bp=100, default_currency="USD"))
        second = await create(c, shop, "s2", amount="10.00")
        assert second.status_code == 201, second.text
        assert second.json()["currency"] == "USD"
        assert second.json()["rate"]["minor_units_per_btc"] == 6_000_000 * 9_900 // 10_000

        url = await check("http://127.0.0.1:9/hook", environment="development")
        async with env.sessions() as s, s.begin():
            hook = (await create_webhook(s, store_id=shop["store"], url=url,
                                         events=["invoice.created"])).webhook
        third = await create(c, shop, "s3", amount="1000", currency="SATS")
        assert third.status_code == 201, third.text
        async with env.sessions() as s, s.begin():
            await s.execute(update(Webhook).where(Webhook.id == hook.id).values(enabled=False))
        fourth = await create(c, shop, "s4", amount="1000", currency="SATS")
        assert fourth.status_code == 201, fourth.text
    async with env.sessions() as s:
        sent = [json.loads(body)["data"]["id"] for body in (await s.execute(
            select(WebhookDelivery.request_body).order_by(WebhookDelivery.event_id))).scalars()]
    assert sent == [third.json()["id"]]  # added: heard at once; disabled: silent at once


async def test_a_node_failure_is_answered_once_not_retried_with_fresh_settings(
        lnenv: LnEnv, shop, monkeypatch):  # noqa: F811
    """A quote refused while the store is remembered is made again with a fresh read of the
    store, but only for refusals of ours: a node that is down is asked once, not twice."""
    from satvault.backends.errors import BackendUnavailable

    async with api_client(lnenv) as c:
        warm = await create(c, shop, "warm", amount="1000", currency="SATS")
        assert warm.status_code == 201, warm.text  # the store is remembered now
        calls: list[int] = []

        async def down(*_args, **_kwargs):
            calls.append(1)
            raise BackendUnavailable("the node is down")

        monkeypatch.setattr(lnenv.runtime.lightning, "create_invoice", down)
        r = await create(c, shop, "down", amount="1000", currency="SATS")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert calls == [1]
    async with lnenv.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(StoreInvoice))).scalar_one() == 1
