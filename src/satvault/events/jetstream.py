"""The NATS JetStream adapter of the event stream: the one module that speaks to NATS.

* :func:`subject_for` — an event's subject, ``<prefix>.<subject_type>.<subject_id>`` (one
  subject per aggregate, so a consumer can filter one invoice, every wallet, or everything);
* :class:`JetStream` — a connection: :meth:`~JetStream.ensure_stream` creates or updates the
  stream (subjects ``<prefix>.>``, the duplicate window, the retention) idempotently,
  :meth:`~JetStream.publish` sends one event with ``Nats-Msg-Id`` = its outbox id and waits
  for JetStream's acknowledgement;
* :meth:`JetStream.replay` — the messages from a stream sequence on (an ephemeral consumer,
  nothing acknowledged): ``satvault events tail --from-seq N``;
* :meth:`JetStream.follow` — every new message from now on, in stream order, handed to a
  callback (an ordered ephemeral push consumer: the live updates' one subscriber per process,
  :mod:`satvault.events.live`);
* :class:`DurableConsumer` — a named consumer that survives restarts: each message is handed
  to a handler and acknowledged only once it returned; an event id already handled for its
  aggregate is acknowledged without calling the handler again.

NATS errors stop here: they become :class:`satvault.events.errors.StreamUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from satvault.events.errors import StreamUnavailable
from satvault.logs import get_logger

__all__ = ["DurableConsumer", "JetStream", "Refused", "StreamEvent", "StreamSettings",
           "subject_for"]

log = get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
EVENT_TYPE = "Satvault-Event-Type"
WALLET_ID = "Satvault-Wallet-Id"  # the wallet an event concerns, if any (live updates filter on it)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _token(value: str) -> str:
    """A subject token: NATS gives ``.``, ``*``, ``>`` and whitespace a meaning, so every
    character outside ``[A-Za-z0-9_-]`` becomes ``_`` (our ids never contain one)."""
    return _UNSAFE.sub("_", value) or "_"


def subject_for(prefix: str, subject_type: str, subject_id: str) -> str:
    return f"{prefix}.{_token(subject_type)}.{_token(subject_id)}"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    url: str
    stream: str
    prefix: str
    duplicate_window: float = 900.0
    max_age: float = 30 * 86400.0  # 0: keep forever
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One message of the stream: its stream sequence and subject, the outbox event id (its
    ``Nats-Msg-Id``) and the envelope every consumer receives."""

    seq: int
    subject: str
    event_id: int
    type: str
    envelope: dict[str, Any]
    wallet_id: str | None = None
    body: str = ""  # the envelope as published (``envelope`` parsed from it)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "subject": self.subject, "event_id": self.event_id,
                "type": self.type, "event": self.envelope}


def _event(msg: Msg) -> StreamEvent:
    headers = msg.headers or {}
    body = json.loads(msg.data)
    return StreamEvent(seq=int(msg.metadata.sequence.stream), subject=msg.subject,
                       event_id=int(headers[MSG_ID]) if MSG_ID in headers else 0,
                       type=str(headers.get(EVENT_TYPE, body.get("type", ""))), envelope=body,
                       wallet_id=headers.get(WALLET_ID) or None, body=msg.data.decode())


# The client's own reports, one structured line each (its default logs a traceback for every
# failed reconnection attempt, found from outside in doctor's and serve's output). Whoever
# uses the connection next connects anew once the client gave it up (:attr:`JetStream.closed`).
async def _client_error(exc: Exception) -> None:
    log.warning("nats_client_error", error=f"{type(exc).__name__}: {exc}"[:300])


async def _disconnected() -> None:
    log.warning("nats_disconnected", note="the client tries a few times, then gives the "
                "connection up; the relay and the consumers connect anew on their next round")


async def _reconnected() -> None:
    log.info("nats_reconnected")


class JetStream:
    """One NATS connection and its JetStream context (use as ``async with``)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def __aenter__(self) -> JetStream:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            return
        if self._nc is not None:  # a client still reconnecting, or given up: its socket closed
            await self.close()
        try:
            self._nc = await nats.connect(
                self.settings.url, connect_timeout=self.settings.timeout,
                allow_reconnect=True, max_reconnect_attempts=3, reconnect_time_wait=0.5,
                drain_timeout=2.0, name="satvault", error_cb=_client_error,
                disconnected_cb=_disconnected, reconnected_cb=_reconnected)
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"cannot reach NATS at {self.settings.url}: "
                                    f"{type(exc).__name__}") from exc
        self._js = self._nc.jetstream(timeout=self.settings.timeout)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            async with asyncio.timeout(3.0):
                await nc.drain()
        except (nats.errors.Error, TimeoutError, OSError):
            pass
        finally:  # whatever the drain did (or if it was cancelled), the socket is closed
            if not nc.is_closed:
                await nc.close()

    @property
    def closed(self) -> bool:
        """No connection, or one the client gave up on (it retries a few times first)."""
        return self._nc is None or self._nc.is_closed

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise StreamUnavailable("not connected to NATS")
        return self._js

    async def ensure_stream(self) -> None:
        """Create the stream, or bring an existing one's subjects, duplicate window and
        retention to the settings (safe to call at every start, from several processes)."""
        s = self.settings
        config = StreamConfig(name=s.stream, subjects=[f"{s.prefix}.>"],
                              duplicate_window=s.duplicate_window, max_age=s.max_age,
                              description="satvault outbox events, one subject per aggregate")
        try:
            try:
                info = await self.js.stream_info(s.stream)
            except nats.js.errors.NotFoundError:
                try:
                    await self.js.add_stream(config)
                    log.info("event_stream_created", stream=s.stream, prefix=s.prefix)
                    return
                except nats.js.errors.BadRequestError:  # created meanwhile by another process
                    info = await self.js.stream_info(s.stream)
            have = info.config
            if (have.subjects != config.subjects
                    or float(have.duplicate_window or 0) != config.duplicate_window
                    or float(have.max_age or 0) != config.max_age):
                have.subjects = config.subjects
                have.duplicate_window = config.duplicate_window
                have.max_age = config.max_age
                await self.js.update_stream(have)
                log.info("event_stream_updated", stream=s.stream, prefix=s.prefix)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"cannot set up stream {s.stream}: {exc}") from exc

    async def publish(self, subject: str, body: bytes, *, event_id: int, type: str,
                      wallet_id: str | None = None) -> tuple[int, bool]:
        """Publish one event and wait for the stream's acknowledgement; returns (stream
        sequence, duplicate). ``duplicate``: JetStream had this Msg-Id already (within its
        duplicate window) and stored nothing."""
        headers = {MSG_ID: str(event_id), EVENT_TYPE: type}
        if wallet_id:
            headers[WALLET_ID] = wallet_id
        try:
            ack = await self.js.publish(subject, body, stream=self.settings.stream,
                                        headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"publishing event {event_id} failed: "
                                    f"{type_name(exc)}") from exc
        if ack.duplicate:
            await self._same_as_stored(int(ack.seq), subject, body, event_id)
        return int(ack.seq), bool(ack.duplicate)

    async def _same_as_stored(self, seq: int, subject: str, body: bytes, event_id: int) -> None:
        """A duplicate stands for the event only if the stream holds the event itself: ours,
        published before a crash or a lost lease. Anything else under its id was published by
        someone else, and would make JetStream drop the event for its duplicate window (found
        from outside: a message published ahead as ``Nats-Msg-Id: 9`` and event 9 never
        reached the stream, the relay counting it as sent). Refused: the relay stops before
        it and publishes it once the window has passed."""
        try:
            stored = await self.js.get_msg(self.settings.stream, seq=seq)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"cannot read back event {event_id}: "
                                    f"{type_name(exc)}") from exc
        if stored.subject != subject or bytes(stored.data or b"") != body:
            log.error("event_stream_foreign_message", event_id=event_id, seq=seq,
                      subject=stored.subject, note="someone else publishes on the stream's "
                      "subjects: allow only satvault's relay to publish (docs/security.md)")
            raise StreamUnavailable(
                f"the stream holds a message that is not event {event_id} under its id "
                f"(sequence {seq}): publishing stops until JetStream's duplicate window has "
                "passed; allow only satvault's relay to publish on the stream's subjects")

    async def last_seq(self) -> int:
        seq = await self.last_seq_if_any()
        if seq is None:
            raise StreamUnavailable(f"no stream {self.settings.stream} on this NATS server")
        return seq

    async def last_seq_if_any(self) -> int | None:
        """The stream's last sequence, None when the server has no such stream (the relay
        creates it at its first round)."""
        try:
            info = await self.js.stream_info(self.settings.stream)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"no stream {self.settings.stream}: {exc}") from exc
        return int(info.state.last_seq)

    async def replay(self, from_seq: int, *, filter: str = ">", limit: int = 1000
                     ) -> list[StreamEvent]:
        """The stream's messages from sequence ``from_seq`` on (those of subjects matching
        ``<prefix>.<filter>``), at most ``limit``, up to the end as of now."""
        subject = f"{self.settings.prefix}.{filter}"
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=max(1, from_seq), ack_policy=AckPolicy.NONE,
                                inactive_threshold=30.0)
        out: list[StreamEvent] = []
        try:
            end = await self.last_seq()
            if end < from_seq:
                return out
            sub = await self.js.pull_subscribe(subject, stream=self.settings.stream,
                                               config=config)
            try:
                while len(out) < limit:
                    try:
                        msgs = await sub.fetch(min(256, limit - len(out)), timeout=1.0)
                    except nats.errors.TimeoutError:
                        break
                    out += [_event(m) for m in msgs]
                    if msgs[-1].metadata.num_pending == 0 or out[-1].seq >= end:
                        break
            finally:
                await sub.unsubscribe()
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"replay from {from_seq} failed: {exc}") from exc
        return out


    async def follow(self, callback: Callable[[StreamEvent], Awaitable[None]], *,
                     filter: str = ">") -> Callable[[], Awaitable[None]]:
        """Hand every message published from now on to ``callback``, in stream order, each
        once (an *ordered consumer*: ephemeral, nothing acknowledged; the client recreates it
        from the last sequence it saw if a message goes missing or the server stops sending
        heartbeats). Returns the function that stops it."""
        async def on_message(msg: Msg) -> None:
            try:
                event = _event(msg)
            except (KeyError, ValueError, TypeError):
                log.warning("event_stream_bad_message", subject=msg.subject)
                return
            await callback(event)

        try:
            sub = await self.js.subscribe(
                f"{self.settings.prefix}.{filter}", cb=on_message, stream=self.settings.stream,
                ordered_consumer=True, deliver_policy=DeliverPolicy.NEW, idle_heartbeat=5.0)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StreamUnavailable(f"cannot follow {self.settings.stream}: {exc}") from exc

        async def stop() -> None:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone already
                await sub.unsubscribe()

        return stop


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


Handler = Callable[[StreamEvent], Awaitable[None]]


class Refused(Exception):
    """A handler's answer that a message is none of ours (an event the outbox does not
    have): it is terminated, not delivered again, and moves no position."""


class DurableConsumer:
    """A durable pull consumer on ``<prefix>.<filter>``: JetStream remembers how far it got
    (acknowledged messages), so a restarted process carries on where it stopped. Delivery is
    at least once: a message whose handler raised, or whose ack was lost, comes again (after
    ``ack_wait``). Within a process, an event id at or below the last one handled for its
    subject (aggregate) is acknowledged and skipped; across restarts the handler must be
    idempotent on ``event_id``."""

    def __init__(self, stream: JetStream, name: str, handler: Handler, *, filter: str = ">",
                 ack_wait: float = 30.0, start_seq: int | None = None,
                 check_every: float = 5.0) -> None:
        self.stream = stream
        # While nothing comes, how often to ask whether the consumer is still on the server
        # (a fetch from a deleted one only times out, like one with nothing waiting).
        self.check_every = check_every
        self._checked = 0.0
        self.name = name
        self.handler = handler
        self.filter = filter
        self.ack_wait = ack_wait
        self.start_seq = start_seq
        self._sub: Any = None
        self._seen: dict[str, int] = {}
        self.handled = 0
        self.skipped = 0
        self.refused = 0  # messages terminated: not an event, or one the handler refused

    async def _subscription(self) -> Any:
        if self.stream.closed:
            # The client gave its connection up (NATS away for longer than its reconnection
            # attempts), and the subscription with it: subscribe again on a new one (found
            # from outside: the webhook fan-out stayed on the dead one until a restart).
            self._sub = None
        if self._sub is None:
            await self.stream.connect()
            await self.stream.ensure_stream()
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                    max_ack_pending=1)  # one at a time: order per aggregate
            if self.start_seq is not None:
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = self.start_seq
            self._sub = await self.stream.js.pull_subscribe(
                f"{self.stream.settings.prefix}.{self.filter}", durable=self.name,
                stream=self.stream.settings.stream, config=config)
        return self._sub

    async def step(self, batch: int = 100, timeout: float = 0.5) -> int:
        """Handle up to ``batch`` waiting messages, one at a time (the consumer allows one
        unacknowledged message, so a redelivery never overtakes a later event); returns how
        many were handled. A handler's exception is raised after the message was told to
        come back (``nak``). A message that is no event (no numeric id, no JSON object), or
        that the handler :class:`Refused`, is terminated and logged, and the next one is
        handled (found from outside: one such message stopped the webhook fan-out for every
        store, fetched and failed again and again)."""
        done = 0
        for _ in range(batch):
            try:
                sub = await self._subscription()
                try:
                    (msg,) = await sub.fetch(1, timeout=timeout)
                except nats.errors.TimeoutError:
                    await self._still_there()
                    break
            except (nats.errors.Error, TimeoutError) as exc:
                raise StreamUnavailable(f"consumer {self.name}: {exc}") from exc
            try:
                event = _event(msg)
                if not isinstance(event.envelope, dict) or event.event_id <= 0:
                    raise ValueError("not an event")
            except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError):
                await self._refuse(msg, reason="not an event")
                continue
            if event.event_id <= self._seen.get(event.subject, 0):
                self.skipped += 1
                await msg.ack_sync()
                continue
            try:
                await self.handler(event)
            except asyncio.CancelledError:
                raise
            except Refused as exc:
                await self._refuse(msg, reason=str(exc))
                continue
            except Exception:
                await msg.nak()
                raise
            await msg.ack_sync()  # the server has it: a restart will not deliver it again
            self._seen[event.subject] = event.event_id
            self.handled += 1
            done += 1
        return done

    async def _still_there(self) -> None:
        """Nothing came: every ``check_every`` seconds, whether the durable consumer (and
        its stream) still exist; if not, subscribe again at the next fetch, which sets both
        up anew (found from outside: with the stream deleted under a live connection, the
        webhook fan-out fetched from a consumer that was gone, each fetch a timeout taken
        for "nothing waiting", and no webhook went out)."""
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        try:
            await self.stream.js.consumer_info(self.stream.settings.stream, self.name)
        except nats.js.errors.NotFoundError:
            log.warning("event_stream_consumer_gone", consumer=self.name,
                        stream=self.stream.settings.stream,
                        note="set up again; what the stream held and this consumer had not "
                        "handled was lost with it (docs/events.md)")
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await sub.unsubscribe()

    async def _refuse(self, msg: Msg, *, reason: str) -> None:
        self.refused += 1
        log.error("event_stream_message_refused", consumer=self.name, subject=msg.subject,
                  reason=reason, note="terminated: someone else may publish on the stream's "
                  "subjects (docs/security.md)")
        await msg.term()

    async def close(self) -> None:
        """Stop fetching (the durable consumer stays on the server, with its position)."""
        sub, self._sub = self._sub, None
        if sub is not None and not self.stream.closed:  # (a given-up connection took it)
            await sub.unsubscribe()

    async def stop(self) -> None:
        """:meth:`close`, and the connection too (for a worker that owns it)."""
        await self.close()
        await self.stream.close()

    async def delete(self) -> None:
        """Remove the durable consumer from the server (it otherwise stays)."""
        await self.close()
        await self.stream.js.delete_consumer(self.stream.settings.stream, self.name)

