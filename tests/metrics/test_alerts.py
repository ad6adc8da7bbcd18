"""The alerts worker (as composition.py builds it) tells a real SMTP server (aiosmtpd, in
this process) and a local webhook receiver once when a critical condition starts and once
when it ends, however many ticks pass in between; its memory is the database, so a restarted
worker repeats nothing. The conditions themselves are decided by a pure function."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from satvault.composition import alerts_worker
from satvault.config import Settings
from satvault.events.signing import SIGNATURE_HEADER, verify
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.metrics.alerts import evaluate
from satvault.metrics.models import AlertState
from satvault.metrics.state import Snapshot
from tests.events.conftest import Receiver
from tests.liveserver import serve
from tests.waiting import eventually

SECRET = "whsec_alerts_0123456789"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with serve(r) as base_url:
        r.base_url = base_url
        yield r


async def raise_hot_wallet(sessions, sat: int) -> None:
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
    await submit_one(sessions, TransferSpec("test:hot-refill", platform.hot_wallet.id,
                                            platform.equity.id, sat * 1000, "BTC"))


async def test_one_mail_and_one_webhook_when_the_hot_wallet_drops_under_its_floor_and_recovers(
        sessions, db_url, tmp_path, smtp, receiver):
    box, port = smtp
    settings = Settings(database_url=db_url, home=tmp_path, semicold_floor_sat=50_000,
                        alert_interval=0.02, alert_webhook_urls=receiver.url("/ops"),
                        alert_webhook_secret=SecretStr(SECRET), alert_smtp_host="127.0.0.1",
                        alert_smtp_port=port, alert_email_from="satvault@example.com",
                        alert_email_to="ops@example.com, oncall@example.com")

    async def ticks(worker, n: int) -> None:  # let it run n more ticks
        target = worker.runs + n
        await eventually(lambda: worker.runs >= target, timeout=10)

    worker = alerts_worker(settings, sessions, None)
    worker.start()
    try:
        # the hot wallet is empty: under its 50,000 sat floor
        await eventually(lambda: len(box.messages) == 1 and len(receiver.calls["/ops"]) == 1,
                         timeout=10)
        await ticks(worker, 5)
        assert len(box.messages) == 1 and len(receiver.calls["/ops"]) == 1
        mail = box.messages[0]
        assert mail["Subject"] == "[satvault] FIRING: hot_wallet_under_floor"
        assert box.recipients[0] == ["ops@example.com", "oncall@example.com"]
        assert "holds 0 sat, its floor is 50000 sat" in mail.get_payload()
        call = receiver.calls["/ops"][0]
        verify(SECRET, call.headers[SIGNATURE_HEADER.lower()], call.body)
        assert call.json["type"] == "alert.firing"
        assert call.json["alert"] == "hot_wallet_under_floor"
        assert call.json["severity"] == "critical"
        assert worker.last_error is None

        await raise_hot_wallet(sessions, 60_000)
        await eventually(lambda: len(box.messages) == 2 and len(receiver.calls["/ops"]) == 2,
                         timeout=10)
        await ticks(worker, 5)
    finally:
        await worker.stop()
    assert len(box.messages) == 2 and len(receiver.calls["/ops"]) == 2
    assert box.messages[1]["Subject"] == "[satvault] RESOLVED: hot_wallet_under_floor"
    resolved = receiver.calls["/ops"][1]
    verify(SECRET, resolved.headers[SIGNATURE_HEADER.lower()], resolved.body)
    assert resolved.json["type"] == "alert.resolved"
    assert "holds 60000 sat" in resolved.json["summary"]
    # nothing else fired: the other conditions hold no incident
    async with sessions() as s:
        states = {r.name: r.firing for r in (await s.execute(select(AlertState))).scalars()}
    assert states == {"reconciliation_difference": False, "signer_refusal": False,
                      "hot_wallet_under_floor": False}

    # a restarted worker remembers what it told: nothing is sent again
    again = alerts_worker(settings, sessions, None)
    again.start()
    try:
        await ticks(again, 3)
    finally:
        await again.stop()
    assert len(box.messages) == 2 and len(receiver.calls["/ops"]) == 2


async def test_a_failed_send_is_tried_again_until_it_is_answered(sessions, db_url, tmp_path,
                                                                receiver):
    settings = Settings(database_url=db_url, home=tmp_path, semicold_floor_sat=50_000,
                        alert_interval=0.02, alert_webhook_urls=receiver.url("/ops"))
    receiver.answer("/ops", (500, None), (503, None))  # then 200
    worker = alerts_worker(settings, sessions, None)
    worker.start()
    try:
        await eventually(lambda: len(receiver.calls["/ops"]) == 3, timeout=10)
        target = worker.runs + 5
        await eventually(lambda: worker.runs >= target, timeout=10)
    finally:
        await worker.stop()
    calls = receiver.calls["/ops"]
    assert len(calls) == 3 and {c.json["type"] for c in calls} == {"alert.firing"}
    assert SIGNATURE_HEADER.lower() not in calls[0].headers  # no secret configured


def test_the_conditions():
    calm = Snapshot(tiers={"semicold": (80_000, 80_000)}, chain_tip=110, watcher_height=109,
                    chain_up=True, lightning_up=True, lightning_synced=True)
    found = evaluate(calm, floor_sat=50_000, lag_blocks=3, recent_refusals=0)
    assert {k for k, f in found.items() if f.firing} == set()
    assert set(found) == {"reconciliation_difference", "signer_refusal",
                          "hot_wallet_under_floor", "watcher_stalled", "node_out_of_sync"}

    bad = Snapshot(tiers={"semicold": (49_999, 49_999)}, chain_tip=112, watcher_height=109,
                   chain_up=True, lightning_up=True, lightning_synced=False,
                   reconciliation_raised={"world": 2}, review_open={"signer_limit": 1})
    found = evaluate(bad, floor_sat=50_000, lag_blocks=3, recent_refusals=1)
    assert {k for k, f in found.items() if f.firing} == {
        "reconciliation_difference", "signer_refusal", "hot_wallet_under_floor",
        "watcher_stalled", "node_out_of_sync"}
    assert found["node_out_of_sync"].summary == "the Lightning node is not synced to the chain"
    assert found["watcher_stalled"].summary.startswith("the chain watcher is 3 block(s) behind")

    down = Snapshot(chain_up=False)  # no tip: the watcher's lag is unknown, not "fine"
    found = evaluate(down, floor_sat=0, lag_blocks=3, recent_refusals=0)
    assert "watcher_stalled" not in found
    assert found["node_out_of_sync"].firing
    assert not found["hot_wallet_under_floor"].firing  # a floor of 0 is never undershot


async def test_a_signer_refusal_opens_its_alert_and_it_closes_after_the_window(
        sessions, db_url, tmp_path, clock):
    from satvault.metrics.alerts import AlertMonitor
    from satvault.telemetry import SIGNER_REFUSALS

    monitor = AlertMonitor(sessions, [], floor_sat=0, lag_blocks=3, refusal_seconds=600)
    await monitor.step()
    SIGNER_REFUSALS.labels("FeeTooHigh").inc()
    await monitor.step()

    async def firing() -> bool:
        async with sessions() as s:
            row = await s.get(AlertState, "signer_refusal")
            return bool(row and row.firing)

    assert await firing()
    clock.advance(seconds=300)
    await monitor.step()
    assert await firing()
    clock.advance(seconds=301)
    await monitor.step()
    assert not await firing()
