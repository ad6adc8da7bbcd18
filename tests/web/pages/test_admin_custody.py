"""``/admin/custody``: a refill waiting for the cold cosigners, its PSBT downloaded from the
page, signed by the test cosigners (as tests/custody do) and uploaded back through the page
until the transaction is complete; a tampered, foreign or garbage PSBT is refused with the
reason and nothing stored."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from embit import ec
from embit.psbt import PSBT
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from satvault.custody.cold import ColdOutput, ColdWallet, make_cold_psbt, p2wpkh
from satvault.custody.offline import build_descriptor
from satvault.kernel.ids import new_id
from satvault.onchain.service import register_wallet
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch, PayoutTx
from satvault.web.app import create_app
from tests.custody.conftest import NETWORK, cold_coin, make_cosigners
from tests.custody.test_cold import embit_sign
from tests.web.pages.admin_helpers import sign_in_admin, token_of
from tests.web.pages.conftest import PASSWORD, page_settings, sign_in

COSIGNERS = make_cosigners(3)
DESCRIPTOR = build_descriptor(2, [c.key_line for c in COSIGNERS], NETWORK)


@pytest.fixture
async def browser(engine: AsyncEngine, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The pages' browser on a regtest platform with a 2-of-3 cold wallet."""
    app = create_app(page_settings(db_url, network=NETWORK, cold_descriptor=DESCRIPTOR),
                     engine=engine, start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def refill(sessions) -> str:
    """A refill in ``cosigning``: 400,000 sat of cold coin, 250,000 to semi-cold."""
    wallet = ColdWallet.from_descriptor(DESCRIPTOR, NETWORK)
    hot_spk = p2wpkh(ec.PrivateKey(bytes([9]) * 32).get_public_key().sec())
    unsigned = make_cold_psbt(
        [cold_coin(wallet, 0, 400_000)],
        [ColdOutput(hot_spk, 250_000),
         ColdOutput(wallet.derive(1, 0).script_pubkey, 149_000, cold_change_index=0)],
        wallet=wallet, network=NETWORK)
    now = datetime.now(UTC)
    batch_id = new_id("pob")
    async with sessions() as s, s.begin():
        await register_wallet(s, role="cold", descriptor=DESCRIPTOR, network=NETWORK,
                              gap_limit=20)
        s.add(PayoutBatch(id=batch_id, kind=MoveKind.REFILL, status=BatchStatus.COSIGNING,
                          psbt=unsigned, feerate_sat_vb=2, fee_sat=1_000, created_at=now,
                          updated_at=now))
    return batch_id


async def stored(sessions, batch_id: str) -> PayoutBatch:
    async with sessions() as s:
        batch = await s.get(PayoutBatch, batch_id)
    assert batch is not None
    return batch


async def test_a_refill_is_signed_through_the_page_and_bad_psbts_change_nothing(
        browser, people, sessions, refill):
    await sign_in(browser, "alice@example.com")
    assert (await browser.get(f"/admin/custody/{refill}/psbt")).status_code == 403
    await sign_in_admin(browser, sessions, "root@example.com")
    page = await browser.get("/admin/custody")
    assert page.status_code == 200
    assert f'data-batch="{refill}"' in page.text and "0 of 2 signatures" in page.text
    token = await token_of(browser, "/admin/custody")

    # Download: base64 text and the binary file, the very PSBT stored.
    b64 = await browser.get(f"/admin/custody/{refill}/psbt?format=base64")
    binary = await browser.get(f"/admin/custody/{refill}/psbt?format=binary")
    assert b64.status_code == binary.status_code == 200
    assert "attachment" in binary.headers["content-disposition"]
    assert b64.text.strip() == (await stored(sessions, refill)).psbt
    assert binary.content == base64.b64decode(b64.text.strip())
    assert binary.content.startswith(b"psbt\xff")

    a, b, _ = COSIGNERS
    signed_a = embit_sign(b64.text.strip(), a)
    signed_b = embit_sign(b64.text.strip(), b)

    # Without the CSRF token: refused, nothing stored.
    r = await browser.post(f"/admin/custody/{refill}/psbt", data={"pasted": signed_a})
    assert r.status_code == 403
    assert (await stored(sessions, refill)).partial_psbt is None

    # Cosigner A's signature, as a binary file: merged, one of two.
    r = await browser.post(
        f"/admin/custody/{refill}/psbt", data={"csrf_token": token},
        files={"file": ("a.psbt", base64.b64decode(signed_a), "application/octet-stream")})
    assert r.status_code == 303, r.text
    assert "more cosigners must sign" in (await browser.get(r.headers["location"])).text
    partial = (await stored(sessions, refill)).partial_psbt
    assert partial and len(PSBT.from_string(partial).inputs[0].partial_sigs) == 1
    page = (await browser.get("/admin/custody")).text
    assert "1 of 2 signatures" in page and "signed=true" in page

    # Refused, each with its reason, and nothing changed: another transaction (an output
    # changed), a signature by a key that is no cosigner's, and garbage.
    tampered = PSBT.from_string(signed_b)
    tampered.outputs[0].value = 260_000
    foreign = PSBT.from_string(signed_b)
    sig = next(iter(foreign.inputs[0].partial_sigs.values()))
    foreign.inputs[0].partial_sigs = {ec.PrivateKey(bytes([5]) * 32).get_public_key(): sig}
    for text, reason in ((str(tampered.to_base64()), "is not refill"),
                         (str(foreign.to_base64()), "partial signature from key"),
                         ("not a psbt at all", "neither base64 nor hex")):
        r = await browser.post(f"/admin/custody/{refill}/psbt",
                               data={"csrf_token": token, "pasted": text})
        assert r.status_code in (409, 422), r.text
        assert reason in r.text and 'role="alert"' in r.text
        batch = await stored(sessions, refill)
        assert batch.partial_psbt == partial and batch.status is BatchStatus.COSIGNING

    # Cosigner B's, pasted: complete, finalized and handed over (signed, txid stored).
    r = await browser.post(f"/admin/custody/{refill}/psbt",
                           data={"csrf_token": token, "pasted": signed_b})
    assert r.status_code == 303, r.text
    assert "fully signed" in (await browser.get(r.headers["location"])).text
    # The page's messages are its own: a link cannot make it say something else.
    spoof = await browser.get("/admin/custody?done=Send+coins+to+bc1qevil&batch=x")
    assert "bc1qevil" not in spoof.text and 'id="notice"' not in spoof.text
    batch = await stored(sessions, refill)
    assert batch.status is BatchStatus.SIGNED and batch.txid
    async with sessions() as s:
        [tx] = (await s.execute(select(PayoutTx).where(PayoutTx.batch_id == refill))).scalars()
    assert tx.txid == batch.txid and tx.raw_tx
    # No longer waiting for cosigners: no PSBT to hand out.
    assert (await browser.get(f"/admin/custody/{refill}/psbt")).status_code in (409, 422)


async def test_planning_needs_the_process_with_node_connections(browser, people, sessions):
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/custody")
    r = await browser.post("/admin/custody/refill", data={"csrf_token": token})
    assert r.status_code == 409 and "no node connection" in r.text
    assert (await browser.post("/admin/custody/sweep", data={})).status_code == 403


# --------------------------------------------------------------- with the nodes (simnet)

@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """For ``env``: semi-cold under its floor asks the cold wallet for 500,000 sat."""
    from tests.custody.test_refill import REFILL_SETTINGS

    return {**REFILL_SETTINGS, "rate_limit_enabled": False}


async def test_a_refill_asked_for_and_signed_on_the_pages_is_broadcast_and_booked(env):
    from satvault.accounts import service as acc
    from satvault.audit.models import AuditEvent
    from tests.custody.test_refill import fund_cold
    from tests.custody.test_sweeps import tiers

    async with env.sessions() as s, s.begin():
        await acc.create_user(s, email="root@example.com", password=PASSWORD, is_admin=True)
    await fund_cold(env, 1_000_000)
    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await sign_in_admin(client, env.sessions, "root@example.com")
        # The node column: the cold coin is at the node.
        page = (await client.get("/admin/balances")).text
        cold_row = page.split('data-tier="cold"')[1].split("</tr>")[0]
        assert cold_row.count("1,000,000") == 3  # coins, ledger, at the node
        token = await token_of(client, "/admin/custody")
        r = await client.post("/admin/custody/refill", data={"csrf_token": token})
        assert r.status_code == 303, r.text
        assert "raised for the cold cosigners" in (await client.get(r.headers["location"])).text
        async with env.sessions() as s:
            batch = (await s.execute(select(PayoutBatch).where(
                PayoutBatch.kind == MoveKind.REFILL))).scalar_one()
            audited = (await s.execute(select(AuditEvent).where(
                AuditEvent.action == "custody.refill.request"))).scalar_one()
        assert batch.status is BatchStatus.COSIGNING and audited.object == batch.id
        # A second request while one is in progress plans nothing.
        r = await client.post("/admin/custody/refill", data={"csrf_token": token})
        assert r.status_code == 200 and "in progress" in r.text

        unsigned = (await client.get(f"/admin/custody/{batch.id}/psbt")).text.strip()
        a, b, _ = COSIGNERS
        for cosigner in (a, b):
            r = await client.post(f"/admin/custody/{batch.id}/psbt", data={
                "csrf_token": token, "pasted": embit_sign(unsigned, cosigner)})
            assert r.status_code == 303, r.text
    async with env.sessions() as s:
        done = await s.get(PayoutBatch, batch.id)
    assert done is not None and done.status is BatchStatus.SIGNED
    assert (await env.runtime.payouts.advance()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    assert (await tiers(env))["hot_wallet"] == 500_000
