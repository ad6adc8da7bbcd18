"""Found from outside (twice): a wallet stream opened "from now", or resumed with
Last-Event-ID, while a transaction holding a lower outbox id was still open, never sent that
transaction's event. On PostgreSQL an id is taken at INSERT and seen at COMMIT: the stream
started after the highest id committed (or after the resumed id), and the lower one,
committed a moment later, fell below it. A stream's frames now carry its exact position
(:mod:`satvault.events.cursor`), and one opened from now counts as before its start only
what was committed then. (On SQLite a writer holds the write lock from its first statement,
so ids commit in order: the same tests run there with the commits in that order.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from satvault.accounts import service as acc
from satvault.events.outbox import emit
from tests.events.conftest import serve
from tests.events.test_sse import emit_for, events


async def _wallet(sessions, world) -> tuple[str, dict[str, str]]:
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    return wallet.id, {"Authorization": f"Bearer {key}"}


async def _emit(session, wallet_id: str, name: str) -> int:
    return await emit(session, type="withdrawal.created", subject_type="withdrawal",
                      subject_id=name, wallet_id=wallet_id, payload={"id": name})


async def _committed(sessions, wallet_id: str, name: str) -> int:
    async with sessions() as s, s.begin():
        return await _emit(s, wallet_id, name)


def _ids(frames) -> list[int]:
    return [int(f["data"]["id"]) for f in frames]


@asynccontextmanager
async def _served(make_app, sessions) -> AsyncIterator[httpx.AsyncClient]:
    """The app served, its process's reader of the outbox already reading (another stream
    is open: a process that has served streams for a while)."""
    await emit_for(sessions, "inv_warm", "invoice.created")
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client, \
            events(client, params={"invoice_id": "inv_warm"}):
        yield client


async def _from_now_behind_an_open_writer(client: httpx.AsyncClient, sessions, wallet: str,
                                          auth: dict[str, str]) -> None:
    """A wallet stream opened from now while a transaction holding a lower id than one
    already committed is open: it gets that transaction's event once it commits, and what
    comes after, not what was committed before it opened."""
    sqlite = "sqlite" in str(sessions.kw["bind"].url)
    await _committed(sessions, wallet, "wd_before")
    slow = sessions()
    await slow.begin()
    try:
        early = await _emit(slow, wallet, "wd_early")
        if sqlite:  # the open writer holds the lock (opening a stream writes): it commits
            await slow.commit()  # first, and so is before the stream's start
        else:  # committed before the stream opens: not "from now"
            assert await _committed(sessions, wallet, "wd_late") > early
        async with events(client, params={"wallet_id": wallet}, headers=auth) as take:
            await slow.commit()
            after = await _committed(sessions, wallet, "wd_after")
            expected = [after] if sqlite else [early, after]
            # The early one comes once the stream knows its transaction ended: maybe second.
            assert sorted(_ids(await take(len(expected)))) == expected
    finally:
        await slow.close()


async def test_a_stream_from_now_sends_an_event_whose_transaction_was_open_at_its_start(
        make_app, sessions, world):
    wallet, auth = await _wallet(sessions, world)
    async with _served(make_app, sessions) as client:
        await _from_now_behind_an_open_writer(client, sessions, wallet, auth)


async def test_a_resumed_stream_sends_an_event_whose_transaction_was_open_when_it_was_cut(
        make_app, sessions, world):
    wallet, auth = await _wallet(sessions, world)
    sqlite = "sqlite" in str(sessions.kw["bind"].url)
    async with _served(make_app, sessions) as client:
        slow = sessions()
        try:
            async with events(client, params={"wallet_id": wallet}, headers=auth) as take:
                await slow.begin()
                early = await _emit(slow, wallet, "wd_early")
                if sqlite:  # the open writer holds the lock: it commits first
                    await slow.commit()
                late = await _committed(sessions, wallet, "wd_late")
                got = await take(1)
                assert _ids(got) == [early if sqlite else late]
                position = got[-1]["id"]
            # The stream is cut; the open transaction commits meanwhile.
            await slow.commit()
        finally:
            await slow.close()
        later = await _committed(sessions, wallet, "wd_later")
        async with events(client, params={"wallet_id": wallet},
                          headers={**auth, "Last-Event-ID": position}) as take:
            expected = [late, later] if sqlite else [early, later]
            assert _ids(await take(2)) == expected
        # The position works as the query parameter too, and a later one resumes after it.
        async with events(client, params={"wallet_id": wallet, "last_event_id": position},
                          headers=auth) as take:
            got = await take(2)
            assert _ids(got) == expected
        async with events(client, params={"wallet_id": wallet},
                          headers={**auth, "Last-Event-ID": got[0]["id"]}) as take:
            assert _ids(await take(1)) == expected[1:]


async def test_a_malformed_position_is_refused_before_anything_is_read(
        make_app, sessions, world):
    wallet, auth = await _wallet(sessions, world)
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client:
        for bad in ("12:", "12:a", ":5", "1:2,", "1:" + ",".join(["7"] * 51), "1 2", "١٢"):
            if bad.isascii():  # a header is ASCII
                r = await client.get("/api/v1/events/stream", params={"wallet_id": wallet},
                                     headers={**auth, "Last-Event-ID": bad})
                assert r.status_code == 422, (bad, r.text)
            r = await client.get("/api/v1/events/stream",
                                 params={"wallet_id": wallet, "last_event_id": bad},
                                 headers=auth)
            assert r.status_code == 422, (bad, r.text)


async def test_the_first_stream_of_a_process_opened_behind_a_long_transaction_misses_nothing(
        make_app, sessions, world):
    """The process's reader of the outbox starts from a fence, waited for a second at most.
    Past that (a transaction that wrote stays open), it starts at the highest id committed,
    and cannot say which lower ids are still to commit: a stream opening from now then counts
    as before its start only what it reads as committed, not everything below that id.
    (SQLite: the open writer holds the lock, so it commits first.)"""
    wallet, auth = await _wallet(sessions, world)
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client:
        await _from_now_behind_an_open_writer(client, sessions, wallet, auth)
