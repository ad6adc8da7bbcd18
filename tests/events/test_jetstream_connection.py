"""The JetStream connection's own lifecycle: a client that lost its server and is still
trying to reconnect is closed (its socket with it) when the connection is made anew, and
closing never leaves a socket open, whatever the drain does; the relay and a durable consumer
connect again after NATS was gone longer than the client's own reconnection attempts."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse

import pytest

from satvault.events.errors import StreamUnavailable
from satvault.events.jetstream import DurableConsumer, JetStream, StreamEvent, StreamSettings
from satvault.events.relay import EventRelay


class Proxy:
    """A TCP relay to the NATS server that can cut every connection through it."""

    def __init__(self, upstream: str) -> None:
        url = urlparse(upstream)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 4222
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.listening = self.server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{self.listening}"

    async def back(self) -> None:
        """Listen again, on the same port, after :meth:`cut`."""
        await self.start(self.listening)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for t in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(t)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def cut(self) -> None:
        """Stop accepting and drop every connection: clients start reconnecting."""
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        for w in self.writers:
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()
        self.writers.clear()


async def test_a_client_still_reconnecting_is_closed_when_the_connection_is_made_anew(stream):
    await stream.ensure_stream()
    proxy = Proxy(stream.settings.url)
    via = await proxy.start()
    js = JetStream(StreamSettings(url=via, stream=stream.settings.stream,
                                  prefix=stream.settings.prefix, timeout=2.0))
    await js.connect()
    old = js._nc
    assert old is not None and old.is_connected
    await proxy.cut()
    for _ in range(50):  # the client notices the lost socket and starts reconnecting
        if not old.is_connected:
            break
        await asyncio.sleep(0.02)
    assert not old.is_connected and not old.is_closed
    # the platform connects again (to the server itself): the old client is closed, not left
    # retrying with a socket of its own
    js.settings = stream.settings
    await js.connect()
    try:
        assert old.is_closed
        assert js._nc is not old and js._nc is not None and js._nc.is_connected
    finally:
        await js.close()
    assert js.closed


async def _until(consumer: DurableConsumer, seen: list[int], n: int) -> None:
    """Let ``consumer`` fetch until ``seen`` holds ``n`` events (or 20 rounds went by)."""
    for _ in range(20):
        await consumer.step(timeout=0.3)
        if len(seen) == n:
            return


async def _stop(consumer: DurableConsumer, relay: EventRelay) -> None:
    await consumer.delete()
    await consumer.stop()
    await relay.close()


async def _given_up(js: JetStream) -> None:
    """Until the client has given the connection up (its reconnection attempts spent)."""
    for _ in range(200):
        if js.closed:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the client is still reconnecting")


async def test_the_relay_and_a_consumer_come_back_after_nats_was_gone_a_while(sessions, stream):
    """Found from outside: NATS away for longer than the client's few reconnection attempts
    (~2 s) left the relay and the webhook fan-out on a connection given up, for good: no
    event reached the stream or a webhook until ``serve`` was restarted. Both now connect
    anew on their next round, and what was emitted meanwhile is relayed and handled once."""
    from tests.events.test_relay import emit_events

    await stream.ensure_stream()
    proxy = Proxy(stream.settings.url)
    via = await proxy.start()
    settings = StreamSettings(url=via, stream=stream.settings.stream,
                              prefix=stream.settings.prefix, timeout=1.0)
    relay = EventRelay(sessions, JetStream(settings))
    seen: list[int] = []

    async def handle(ev: StreamEvent) -> None:
        seen.append(ev.event_id)

    consumer = DurableConsumer(JetStream(settings), "after-outage", handle)
    try:
        first = await emit_events(sessions, [("invoice.created", "invoice", "inv_a")])
        assert await relay.tick() == 1
        assert await consumer.step(timeout=0.3) == 1
        await proxy.cut()
        await _given_up(relay.stream)
        await _given_up(consumer.stream)
        later = await emit_events(sessions, [("invoice.settled", "invoice", "inv_a")])
        with pytest.raises(StreamUnavailable):
            await relay.tick()
        with pytest.raises(StreamUnavailable):
            await consumer.step(timeout=0.3)
        await proxy.back()
        assert await relay.tick() == 1
        await _until(consumer, seen, 2)
        assert seen == first + later
    finally:
        await _stop(consumer, relay)
        await proxy.cut()


async def test_the_relay_and_a_consumer_come_back_after_the_stream_was_deleted(sessions,
                                                                              stream):
    """Found from outside: the stream deleted (or lost by a NATS restarted without its
    storage) while the connection stayed up: the relay's every publish failed and it never
    made the stream again; once something did, the webhook fan-out fetched from a durable
    consumer that no longer existed, each fetch a timeout taken for "nothing waiting", and
    no webhook went out while /healthz said ok. The relay makes the stream again at its next
    round, and the consumer, finding itself gone, subscribes again: what is emitted after
    is relayed and handled once."""
    from tests.events.test_relay import emit_events

    relay = EventRelay(sessions, JetStream(stream.settings))
    seen: list[int] = []

    async def handle(ev: StreamEvent) -> None:
        seen.append(ev.event_id)

    consumer = DurableConsumer(JetStream(stream.settings), "after-deletion", handle,
                               check_every=0.0)
    try:
        first = await emit_events(sessions, [("invoice.created", "invoice", "inv_a")])
        assert await relay.tick() == 1
        assert await consumer.step(timeout=0.3) == 1
        await stream.js.delete_stream(stream.settings.stream)
        later = await emit_events(sessions, [("invoice.settled", "invoice", "inv_a")])
        with pytest.raises(StreamUnavailable):
            await relay.tick()
        assert await relay.tick() == 2  # the stream made again, the recent events again
        await _until(consumer, seen, 2)
        assert seen == first + later
    finally:
        await _stop(consumer, relay)


async def test_events_of_a_stream_deleted_twice_in_a_row_are_published_again(sessions,
                                                                            stream):
    """Found from outside: the stream deleted, made anew by the relay, and deleted again
    before the webhook fan-out noticed the first time (it asks every few seconds) lost the
    events published in between: they never reached a webhook, and nothing said so. A relay
    that finds the stream made anew publishes the last minutes' events again (consumers are
    idempotent on the event id), so every event is handled, once."""
    from tests.events.test_relay import emit_events

    relay = EventRelay(sessions, JetStream(stream.settings))
    seen: list[int] = []

    async def handle(ev: StreamEvent) -> None:
        seen.append(ev.event_id)

    consumer = DurableConsumer(JetStream(stream.settings), "twice", handle, check_every=3600)
    ids: list[int] = []
    try:
        ids += await emit_events(sessions, [("invoice.created", "invoice", "inv_a")])
        assert await relay.tick() == 1
        assert await consumer.step(timeout=0.3) == 1
        await consumer.step(timeout=0.1)  # (its next check is an hour away)
        for event in ("invoice.payment_received", "invoice.settled"):
            await stream.js.delete_stream(stream.settings.stream)
            ids += await emit_events(sessions, [(event, "invoice", "inv_a")])
            with pytest.raises(StreamUnavailable):
                await relay.tick()
            assert await relay.tick() >= 1  # the stream made anew, the recent ones again
        consumer.check_every = 0.0  # the fan-out notices its consumer went
        await _until(consumer, seen, len(ids))
        assert seen == ids
    finally:
        await _stop(consumer, relay)
