"""Webhook secrets: rotation through the API (a new secret shown once; deliveries signed with
both secrets during the overlap, with the new one only after it; ownership and scopes), and
sealing at rest under SATVAULT_SECRET_KEY (the columns never hold a secret, deliveries still
verify, a secret stored before the key was set is sealed on the next delivery)."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import select, update

from satvault.auth.sealing import Sealer
from satvault.config import Settings
from satvault.events.errors import InvalidSignature
from satvault.events.models import Webhook
from satvault.events.signing import verify
from satvault.web.app import create_app
from tests.events.conftest import add_webhook, api_client
from tests.events.test_delivery import emit_invoice

KEY = SecretStr("w" * 40)
DAY = 86_400


def accepts(secret: str, call, clock) -> bool:
    """The receiver's check (the documented one): any v1= made with ``secret`` is enough."""
    try:
        verify(secret, call.headers["satvault-signature"], call.body,
               now=clock.now().timestamp())
    except InvalidSignature:
        return False
    return True


def app_with_key(engine, db_url, tmp_path):
    settings = Settings(database_url=db_url, home=tmp_path, environment="development",
                        secret_key=KEY)
    return create_app(settings, engine=engine, start_workers=False)


async def stored(sessions, hook: str) -> Webhook:
    async with sessions() as s:
        return (await s.execute(select(Webhook).where(Webhook.id == hook))).scalar_one()


async def test_rotation_signs_with_both_secrets_during_the_overlap_then_the_new_one(
        make_app, sessions, world, receiver, clock, dispatchers):
    async with api_client(make_app()) as c:
        r = await c.post(f"/api/v1/stores/{world.store}/webhooks", headers=world.auth("store"),
                         json={"url": receiver.url("/rot"), "events": ["invoice.*"]})
        assert r.status_code == 201, r.text
        hook, old = r.json()["id"], r.json()["secret"]

        # Another merchant's key, another store's key of the same merchant: not found;
        # a key without a webhook-writing scope: forbidden. Nothing changes.
        for who in ("foreign", "foreign_merchant", "sibling"):
            r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=world.auth(who))
            assert r.status_code == 404, (who, r.text)
        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret",
                         headers=world.auth("store_reader"))
        assert r.status_code == 403, r.text
        r = await c.post("/api/v1/webhooks/whk_nope/rotate-secret", headers=world.auth("store"))
        assert r.status_code == 404
        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=world.auth("store"),
                         json={"overlap_seconds": 8 * DAY})
        assert r.status_code == 422
        assert (await stored(sessions, hook)).secret == old

        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=world.auth("store"))
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new.startswith("whsec_") and new != old and r.json()["id"] == hook
        assert r.json()["previous_secret_expires_at"] is not None
        listed = (await c.get(f"/api/v1/stores/{world.store}/webhooks/{hook}",
                              headers=world.auth("store"))).json()
        assert "secret" not in listed

    d = dispatchers()
    await emit_invoice(sessions, world.store)
    assert await d.run_once() == 1
    (during,) = receiver.calls["/rot"]
    assert during.headers["satvault-signature"].count("v1=") == 2
    assert accepts(new, during, clock) and accepts(old, during, clock)

    clock.advance(DAY - 60)  # still inside the overlap
    await emit_invoice(sessions, world.store, start=2)
    assert await d.run_once() == 1
    assert accepts(new, receiver.calls["/rot"][-1], clock)
    assert accepts(old, receiver.calls["/rot"][-1], clock)

    clock.advance(120)  # past it: the old secret is dropped
    await emit_invoice(sessions, world.store, start=3)
    assert await d.run_once() == 1
    after = receiver.calls["/rot"][-1]
    assert after.headers["satvault-signature"].count("v1=") == 1
    assert accepts(new, after, clock) and not accepts(old, after, clock)
    row = await stored(sessions, hook)
    assert row.previous_secret is None and row.previous_secret_expires_at is None


async def test_rotation_without_overlap_and_by_the_merchant(make_app, sessions, world, receiver,
                                                            clock, dispatchers):
    hook, old = await add_webhook(sessions, world.store, receiver.url("/now"))
    async with api_client(make_app()) as c:
        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret",
                         headers=world.auth("merchant"), json={"overlap_seconds": 0})
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert r.json()["previous_secret_expires_at"] is None
    await emit_invoice(sessions, world.store)
    assert await dispatchers().run_once() == 1
    (call,) = receiver.calls["/now"]
    assert accepts(new, call, clock) and not accepts(old, call, clock)


async def test_secrets_are_sealed_at_rest_with_the_secret_key(engine, db_url, tmp_path, sessions,
                                                              world, receiver, clock,
                                                              dispatchers):
    async with api_client(app_with_key(engine, db_url, tmp_path)) as c:
        r = await c.post(f"/api/v1/stores/{world.store}/webhooks", headers=world.auth("store"),
                         json={"url": receiver.url("/sealed"), "events": ["invoice.*"],
                               "secret": "shop-chosen-secret-0123456789"})
        assert r.status_code == 201, r.text
        hook, old = r.json()["id"], r.json()["secret"]
        assert old == "shop-chosen-secret-0123456789"  # the answer still shows it once
        row = await stored(sessions, hook)
        assert old not in row.secret and row.secret.startswith("v1:")

        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=world.auth("store"),
                         json={"overlap_seconds": 3600})
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
    row = await stored(sessions, hook)
    for column in (row.secret, row.previous_secret):
        assert column is not None and column.startswith("v1:")
        assert old not in column and new not in column

    # The dispatcher opens them to sign; without the key it cannot, and sends nothing.
    await emit_invoice(sessions, world.store)
    blind = dispatchers()
    assert await blind.run_once() == 1
    assert receiver.calls["/sealed"] == []
    clock.advance(12)
    d = dispatchers(sealer=Sealer(KEY.get_secret_value().encode()))
    assert await d.run_once() == 1
    (call,) = receiver.calls["/sealed"]
    assert accepts(new, call, clock) and accepts(old, call, clock)


async def test_a_secret_stored_before_the_key_is_sealed_on_the_next_delivery(
        sessions, world, receiver, clock, dispatchers):
    hook, secret = await add_webhook(sessions, world.store, receiver.url("/lazy"))
    assert (await stored(sessions, hook)).secret == secret  # no key: as given
    async with sessions() as s, s.begin():  # and an old one from before a rotation
        await s.execute(update(Webhook).where(Webhook.id == hook).values(
            previous_secret="whsec_the_one_before_0123456789",
            previous_secret_expires_at=clock.now().replace(year=clock.now().year + 1)))
    await emit_invoice(sessions, world.store)
    d = dispatchers(sealer=Sealer(KEY.get_secret_value().encode()))
    assert await d.run_once() == 1
    (call,) = receiver.calls["/lazy"]
    assert accepts(secret, call, clock)
    assert accepts("whsec_the_one_before_0123456789", call, clock)
    row = await stored(sessions, hook)
    assert row.secret.startswith("v1:") and secret not in row.secret
    assert row.previous_secret is not None and row.previous_secret.startswith("v1:")
