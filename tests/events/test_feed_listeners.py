"""A stream's share of its process's feed (outbox or NATS): an overflow wakes a stream that
is waiting for its next row. Found checking the streams' fix: the first of a burst woke the
waiting stream, the overflow then took the queued rows back, and the stream went back to
sleep until its heartbeat (15 s) before catching up from the outbox."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from satvault.events.live import Listener
from satvault.events.models import OutboxEvent
from satvault.events.outbox_feed import FeedListener


def _row(i: int) -> OutboxEvent:
    return OutboxEvent(id=i, type="invoice.created", subject_type="invoice", subject_id="inv",
                       payload="{}", created_at=datetime.now(UTC))


async def _woken_by_a_burst(listener: Any, burst: list[Any]) -> float:
    waiting = asyncio.create_task(listener.next(10.0))
    await asyncio.sleep(0.05)  # the stream waits for its next row
    started = time.monotonic()
    for item in burst:  # one read's rows, handed out at once
        listener.offer(item)
    assert await asyncio.wait_for(waiting, 2.0) is None
    assert listener.overflowed
    return time.monotonic() - started


async def test_an_overflow_wakes_a_waiting_outbox_stream_and_says_what_was_dropped():
    listener = FeedListener(SimpleNamespace(), ("invoice", "inv"), 2)  # type: ignore[arg-type]
    assert await _woken_by_a_burst(listener, [_row(i) for i in (7, 8, 9, 10)]) < 1.0
    assert listener.recovered() == 7  # it catches up from the first dropped
    assert listener.queue.empty() and not listener.overflowed
    listener.offer(_row(11))
    assert (await listener.next(1.0)).id == 11  # type: ignore[union-attr]


async def test_an_overflow_wakes_a_waiting_nats_stream():
    listener = Listener(SimpleNamespace(), lambda e: True, 2)  # type: ignore[arg-type]
    events = [SimpleNamespace(event_id=i) for i in (7, 8, 9)]
    assert await _woken_by_a_burst(listener, events) < 1.0
    listener.recovered()
    assert listener.queue.empty() and not listener.overflowed
