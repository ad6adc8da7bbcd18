"""``/healthz`` names what really runs: the configured backend (``simnet`` for the built-in
simulators) and, beside it, the adapter (the protocol satvault speaks to it)."""

from __future__ import annotations

import pytest

from tests.chainenv import LnEnv, api_client


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"chain_backend": "simnet", "lightning_backend": "simnet"}


async def test_simulators_are_called_simnet(lnenv: LnEnv):
    async with api_client(lnenv) as c:
        r = await c.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chain"] == {"backend": "simnet", "adapter": "bitcoind", "height": 110}
    assert body["lightning"] == {"backend": "simnet", "adapter": "lnd", "synced": True,
                                 "network": "regtest"}


async def test_real_nodes_are_called_by_their_names(lnenv: LnEnv, monkeypatch):
    monkeypatch.setattr(lnenv.settings, "chain_backend", "bitcoind")
    monkeypatch.setattr(lnenv.settings, "lightning_backend", "lnd")
    lnenv.server.set_offline(True)  # and a node that is down says so under the same names
    try:
        async with api_client(lnenv) as c:
            r = await c.get("/healthz")
    finally:
        lnenv.server.set_offline(False)
    assert r.status_code == 503
    body = r.json()
    assert body["chain"]["backend"] == "bitcoind" and body["chain"]["adapter"] == "bitcoind"
    assert "error" in body["chain"]
    assert body["lightning"]["backend"] == "lnd" and body["lightning"]["adapter"] == "lnd"


async def test_the_lightning_listener_is_a_worker_healthz_sees(lnenv: LnEnv):
    """Issue 10: the listener used to be a bare task; now /healthz reports it like the
    periodic workers, and a node it cannot reach makes the platform degraded."""
    import httpx

    from satvault.web.app import create_app
    from tests.waiting import eventually

    app = create_app(lnenv.settings, engine=lnenv.sessions.kw["bind"], start_workers=True,
                     runtime=lnenv.runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        async def listener() -> dict:
            return (await c.get("/healthz")).json()["workers"]["lightning-listener"]

        await eventually(lambda: _ran(listener))
        lnenv.lnd.set_offline(True)
        try:
            async def failing() -> bool:
                return bool((await listener())["last_error"])
            await eventually(failing, timeout=15)
            assert (await c.get("/healthz")).status_code == 503
        finally:
            lnenv.lnd.set_offline(False)


async def _ran(listener) -> bool:
    state = await listener()
    return state["runs"] >= 1 and state["last_error"] is None
