"""A worker's stop: even a tick that swallows its cancellation (a library catching
CancelledError) cannot hang the shutdown behind it."""

from __future__ import annotations

import asyncio

from satvault import workers
from satvault.workers import Worker


async def test_a_tick_that_swallows_its_cancellation_still_stops(monkeypatch):
    monkeypatch.setattr(workers, "STOP_GRACE_SECONDS", 0.2)
    swallowed = 0
    entered = asyncio.Event()

    async def stubborn() -> int:
        nonlocal swallowed
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed += 1  # swallowed once: the first cancellation is lost
            await asyncio.sleep(3600)  # the second one is not
        return 0

    worker = Worker("stubborn", 0.01, stubborn)
    worker.start()
    await entered.wait()
    stopping = asyncio.create_task(worker.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    if not done:  # left hanging: free the test's loop, then fail
        assert worker._task is not None
        worker._task.cancel()
        await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() hung behind a tick that swallowed its cancellation"
    assert swallowed == 1
    assert worker._task is not None and worker._task.done()
