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
