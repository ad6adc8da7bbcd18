"""``satvault events …``: the event stream (``event_stream = "nats"``, docs/events.md).

``satvault events tail --from-seq N`` prints the stream's messages from sequence ``N`` on,
one JSON object per line (``seq``, ``subject``, ``event_id``, ``type``, ``event``: the same
envelope webhooks and live updates carry); ``--follow`` keeps waiting for new ones. Nothing is
acknowledged and nothing is remembered on the server: it is a replay, safe to run any time.
``satvault events relay-status`` shows how far the relay got (its cursor) and the stream's
last sequence. ``satvault events rebase-ids`` moves the next event id past every id issued
before a database restore (:mod:`satvault.events.ids`; ``satvault restore`` does it itself).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from satvault.cli._common import emit, fail, in_transaction
from satvault.config import get_settings
from satvault.db import utcnow
from satvault.events.errors import StreamUnavailable
from satvault.events.ids import IdsNotMovable, rebase_event_ids
from satvault.logs import get_logger

__all__ = ["app"]

log = get_logger(__name__)
app = typer.Typer(help="The event stream (NATS JetStream).", no_args_is_help=True)


@app.command("tail")
def tail_cmd(
    from_seq: Annotated[int, typer.Option("--from-seq", min=1,
                                          help="The first stream sequence to print.")] = 1,
    subject: Annotated[str, typer.Option(
        help="Only subjects matching <prefix>.<this>, e.g. 'invoice.>' or 'wallet.w_1'.")] = ">",
    limit: Annotated[int, typer.Option(min=1, help="Print at most this many.")] = 1000,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new events.")] = False,
) -> None:
    """Replay the event stream from a sequence (one JSON line per event)."""
    from satvault.composition import event_stream  # the whole platform: only when used

    async def run() -> None:
        nxt, left = from_seq, limit
        async with event_stream(get_settings()) as stream:
            while left > 0:
                got = await stream.replay(nxt, filter=subject, limit=left)
                for ev in got:
                    emit(ev.as_dict())
                if got:
                    nxt, left = got[-1].seq + 1, left - len(got)
                elif not follow:
                    return
                else:
                    await asyncio.sleep(1.0)

    try:
        asyncio.run(run())
    except StreamUnavailable as exc:
        fail(str(exc))


@app.command("relay-status")
def relay_status_cmd() -> None:
    """The relay's cursor (last outbox id published) and the stream's last sequence."""
    from satvault.composition import event_stream
    from satvault.events.relay import cursor_position

    settings = get_settings()
    position = in_transaction(cursor_position, settings)

    async def last() -> int:
        async with event_stream(settings) as stream:
            return await stream.last_seq()

    try:
        seq = asyncio.run(last())
    except StreamUnavailable as exc:
        fail(str(exc))
    emit({"ok": True, "event_stream": settings.event_stream, "stream": settings.nats_stream,
          "relayed_up_to_event": position, "stream_last_seq": seq})


@app.command("rebase-ids")
def rebase_ids_cmd() -> None:
    """Move the next event id past every id issued before a restore (run it on a database
    restored by other means than `satvault restore`, before satvault starts on it)."""
    try:
        moved = in_transaction(lambda s: rebase_event_ids(s, now=utcnow()))
    except IdsNotMovable as exc:
        fail(str(exc))
    log.info("event_ids_rebased", **moved.as_dict())
    emit({"ok": True, **moved.as_dict()})
