"""The composition root (issue 10): one place builds and wires the parts, nothing is wired by
an import, and a part that was not wired says so instead of quietly losing events."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
from typing import Any

import httpx
import pytest

from satvault.backends.bitcoind import BitcoindBackend
from satvault.composition import Platform, ensure_dev_signer, event_stream, open_sessions
from satvault.db import session_factory
from satvault.events.outbox import emit, notifier
from satvault.kernel.clock import FakeClock
from tests.chainenv import LnEnv
from tests.waiting import eventually

EVERY_WORKER = {"hold-expiry", "address-expiry", "idempotency-purge", "audit",
                "withdrawal-approvals", "webhooks",
                "alerts", "chain-watcher", "payouts", "custody", "invoices", "lightning-payer",
                "lightning-listener", "event-relay", "webhook-fanout", "lease", "wake-listener"}


def test_importing_the_database_layer_loads_only_the_kernel():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, satvault.db; print(' '.join(sorted("
         "m for m in sys.modules if m.startswith('satvault'))))"],
        capture_output=True, text=True, check=True).stdout.split()
    beyond = {m for m in out if m not in ("satvault", "satvault.db")
              and not m.startswith("satvault.kernel")}
    assert not beyond, out


async def test_events_refuse_sessions_the_root_did_not_wire(engine):
    unwired = session_factory(engine)
    with pytest.raises(RuntimeError, match="composition root"):
        async with unwired() as s, s.begin():
            await emit(s, type="wallet.balance_changed", subject_type="wallet",
                       subject_id="w_1", payload={})

    fired: list[int] = []
    unsubscribe = notifier.subscribe(lambda: fired.append(1))
    try:
        async with open_sessions(engine)() as s, s.begin():
            await emit(s, type="wallet.balance_changed", subject_type="wallet",
                       subject_id="w_1", payload={})
            assert fired == []  # the commit wakes the readers, not the write
        assert fired == [1]
    finally:
        unsubscribe()


async def test_the_platform_starts_every_worker_with_its_hooks_and_stops_them(lnenv: LnEnv):
    engine = lnenv.sessions.kw["bind"]
    tag = secrets.token_hex(4)  # the relay (event_stream = "nats") on a stream of its own
    settings = lnenv.settings.model_copy(update={
        "event_stream": "nats", "nats_stream": f"T_{tag}", "nats_subject_prefix": f"t{tag}.ev"})
    platform = Platform.wire(settings, engine=engine, runtime=lnenv.runtime)
    await platform.start()
    try:
        # the LISTEN/NOTIFY wake-ups between processes exist on PostgreSQL only
        postgres = engine.dialect.name == "postgresql"
        assert {w.name for w in platform.workers} == EVERY_WORKER - (
            set() if postgres else {"wake-listener"})
        by_name = {w.name: w for w in platform.workers}
        # the wake-up hooks are the workers' own events
        assert lnenv.runtime.watcher.wake is by_name["chain-watcher"].wake
        assert lnenv.runtime.payer_wake is by_name["lightning-payer"].wake
        # the relay is a singleton under the platform's lease, its cursor writes fenced by it
        relay = by_name["event-relay"].relay
        assert relay.lease is platform.lease and platform.lease is not None
        if postgres:
            assert relay.writes is not lnenv.sessions
        # the live updates' subscriber, for the app (it connects on the first stream)
        assert platform.live is not None and not platform.live.following
        tasks = [w._task for w in platform.workers]
        assert all(t is not None and not t.done() for t in tasks)
    finally:
        await platform.stop()
    assert all(t is not None and t.done() for t in tasks)
    assert platform.workers == [] and platform.live is None
    with contextlib.suppress(Exception):  # the stream, if NATS was there to create it
        async with event_stream(settings) as stream:
            await stream.js.delete_stream(settings.nats_stream)
    # a runtime handed in stays open for its owner; the engine too
    info = await lnenv.runtime.lightning.get_info()
    assert info.synced
    async with engine.connect():
        pass


async def test_an_api_process_connects_to_the_nodes_but_runs_no_worker(lnenv: LnEnv):
    assert ensure_dev_signer(lnenv.settings)  # a seed of its own under the test's home
    platform = Platform.wire(lnenv.settings, engine=lnenv.sessions.kw["bind"])
    await platform.start(workers=False, runtime=True)
    try:
        assert platform.workers == []
        assert platform.runtime is not None and platform.own_runtime
        tip = await platform.runtime.backend.tip()
        assert tip.height >= 0
    finally:
        await platform.stop()


CHAIN_WORKERS = ("chain-watcher", "payouts", "custody")


async def test_the_chain_workers_stay_stopped_against_a_node_of_another_network(
        lnenv: LnEnv):
    """A node of another network (a mistyped port, a testnet node behind a regtest
    configuration) would have its coins credited as deposits and get payouts built for it.
    The service starts with the node down (it may come later), checks the node's chain on
    first contact, and keeps the chain watcher, payout job and custody worker stopped, with
    /healthz failing and saying why, until the node is on SATVAULT_NETWORK; again after the
    node was unreachable (it may come back as another node)."""
    from satvault.onchain.deposits import create_deposit
    from satvault.web.app import create_app

    env = lnenv
    node = BitcoindBackend(env.server.url, retries=0)

    async def set_chain(name: str) -> None:
        await node.call("simnet_setchain", name)

    async def health() -> tuple[int, dict[str, Any]]:
        r = await client.get("/healthz")
        return r.status_code, r.json()

    async def credited() -> bool:
        return (await env.balances())["available"] == 50_000 * 1000

    async def refusing() -> bool:
        _, body = await health()
        return all("WrongChainNetwork" in (body["workers"][n]["last_error"] or "")
                   for n in CHAIN_WORKERS)

    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    settings = env.settings.model_copy(update={
        "watcher_interval": 0.3, "payout_interval": 0.3, "custody_interval": 0.3})
    await set_chain("test")  # a testnet3 node...
    env.server.set_offline(True)  # ...down at start-up: the service starts all the same
    app = create_app(settings, engine=env.sessions.kw["bind"], start_workers=True,
                     runtime=env.runtime)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            code, body = await health()
            assert code == 503 and "error" in body["chain"]
            env.server.set_offline(False)
            with env.server.lock:  # the workers read the chain meanwhile
                env.chain.pay(d.address, 50_000)
                env.chain.mine(1)
            await eventually(refusing)
            code, body = await health()
            assert code == 503
            assert "the chain node is on testnet, satvault is configured for regtest" in \
                body["workers"]["chain-watcher"]["last_error"]
            assert await env.balances() == {"available": 0, "incoming": 0, "held": 0,
                                            "posted": 0}  # nothing credited from it

            await set_chain("regtest")  # the right node: the workers run, the deposit lands
            await eventually(credited)
            await eventually(lambda: _healthy(client))

            # replaced while unreachable: checked again on the first contact after it
            await set_chain("signet")
            env.server.set_offline(True)
            await eventually(lambda: _watcher_failing(client))
            env.server.set_offline(False)
            await eventually(refusing)
            assert await credited()  # and stays so
    finally:
        env.server.set_offline(False)
        await node.close()


async def test_a_node_swapped_for_another_network_is_noticed_within_the_recheck_interval(
        lnenv: LnEnv, clock: FakeClock):
    """A node replaced on the same URL by one of another network without any call failing in
    between was never noticed: the guard asked only on first contact and after the node was
    unreachable. Now it asks again every ``chain_network_recheck_seconds`` (on the process
    clock): within that the workers go on, once it passed they stop, and a deposit paid on the
    other chain is not credited until the node is on SATVAULT_NETWORK again."""
    from satvault.onchain.deposits import create_deposit
    from satvault.web.app import create_app

    env = lnenv
    node = BitcoindBackend(env.server.url, retries=0)
    settings = env.settings.model_copy(update={
        "watcher_interval": 0.05, "payout_interval": 0.05, "custody_interval": 0.05,
        "chain_network_recheck_seconds": 300,
        "rate_limit_enabled": False})  # /healthz is polled more often than the public budget

    async def runs() -> dict[str, int]:
        body = (await client.get("/healthz")).json()
        return {n: body["workers"][n]["runs"] for n in CHAIN_WORKERS}

    async def refusing() -> bool:
        body = (await client.get("/healthz")).json()
        return all("WrongChainNetwork" in (body["workers"][n]["last_error"] or "")
                   for n in CHAIN_WORKERS)

    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    app = create_app(settings, engine=env.sessions.kw["bind"], start_workers=True,
                     runtime=env.runtime)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await eventually(lambda: _healthy(client))
            await node.call("simnet_setchain", "signet")  # swapped, never unreachable
            before = await runs()
            await eventually(lambda: _ran_twice_more(runs, before))
            assert await _healthy(client)  # within the interval: not asked yet
            clock.advance(301)
            await eventually(refusing)
            with env.server.lock:  # paid on "the other chain": not credited while refused
                env.chain.pay(d.address, 50_000)
                env.chain.mine(1)
            stopped = await runs()
            await asyncio.sleep(0.3)
            assert await runs() == stopped and await refusing()
            assert (await env.balances())["available"] == 0

            await node.call("simnet_setchain", "regtest")  # asked at every tick meanwhile
            await eventually(lambda: _healthy(client))
            await eventually(
                lambda: _available(env, 50_000 * 1000))
    finally:
        await node.close()
        await env.check()


async def _ran_twice_more(runs: Any, before: dict[str, int]) -> bool:
    now = await runs()
    return all(now[n] >= before[n] + 2 for n in before)


async def _available(env: LnEnv, msat: int) -> bool:
    return (await env.balances())["available"] == msat


async def _healthy(client: httpx.AsyncClient) -> bool:
    return (await client.get("/healthz")).status_code == 200


async def _watcher_failing(client: httpx.AsyncClient) -> bool:
    body = (await client.get("/healthz")).json()
    return bool(body["workers"]["chain-watcher"]["last_error"])



def test_the_demo_signer_reads_the_passphrase_file_as_the_signer_commands_do(tmp_path,
                                                                           monkeypatch):
    """Found in a review: the in-process signer stripped every space around the passphrase
    file's content, `satvault signer …` only one trailing newline: one file, two
    passphrases (a seed made by one that the other cannot open)."""
    from satvault.composition import _passphrase
    from satvault.config import Settings
    from satvault.signer.seed import passphrase_from_env_or_file

    file = tmp_path / "signer.passphrase"
    file.write_text("  spaced out passphrase \n")
    monkeypatch.delenv("SATVAULT_SIGNER_PASSPHRASE", raising=False)
    monkeypatch.setenv("SATVAULT_SIGNER_PASSPHRASE_FILE", str(file))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", home=tmp_path)
    assert _passphrase(settings) == passphrase_from_env_or_file() == "  spaced out passphrase "
    monkeypatch.delenv("SATVAULT_SIGNER_PASSPHRASE_FILE")  # the home's file by default
    assert _passphrase(settings) == "  spaced out passphrase "
