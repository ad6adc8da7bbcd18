"""Against a real LND or Core Lightning node: read-only calls and one invoice. Skipped unless
SATVAULT_TEST_LND_URL (+ SATVAULT_TEST_LND_MACAROON_HEX, SATVAULT_TEST_LND_TLS_CERT) or
SATVAULT_TEST_CLN_RPC (a lightning-rpc socket path) is set; use a regtest node."""

from __future__ import annotations

import os

import pytest

from satvault.backends.lightning import InvoiceState, LightningBackend

pytestmark = pytest.mark.real_node


def _backends() -> list[tuple[str, LightningBackend]]:
    found: list[tuple[str, LightningBackend]] = []
    if os.environ.get("SATVAULT_TEST_LND_URL"):
        from satvault.backends.lnd import LndBackend

        found.append(("lnd", LndBackend(os.environ["SATVAULT_TEST_LND_URL"],
                                        macaroon_hex=os.environ.get(
                                            "SATVAULT_TEST_LND_MACAROON_HEX"),
                                        tls_cert=os.environ.get("SATVAULT_TEST_LND_TLS_CERT"))))
    if os.environ.get("SATVAULT_TEST_CLN_RPC"):
        from satvault.backends.cln import ClnBackend

        found.append(("cln", ClnBackend(os.environ["SATVAULT_TEST_CLN_RPC"])))
    return found


BACKENDS = _backends()


@pytest.mark.skipif(not BACKENDS, reason="set SATVAULT_TEST_LND_URL or SATVAULT_TEST_CLN_RPC "
                    "to run against a real regtest node")
@pytest.mark.parametrize(("name", "backend"), BACKENDS or [("none", None)],
                         ids=[n for n, _ in BACKENDS] or ["none"])
async def test_real_node_roundtrip(name: str, backend: LightningBackend) -> None:
    info = await backend.get_info()
    assert info.network == "regtest", "point the real-node suite at a regtest node only"
    inv = await backend.create_invoice(1_000, memo="satvault real-node test", expiry=120)
    assert inv.bolt11.startswith("lnbcrt")
    looked = await backend.lookup_invoice(inv.payment_hash)
    assert looked is not None and looked.state is InvoiceState.OPEN
    decoded = await backend.decode(inv.bolt11)
    assert decoded.payment_hash == inv.payment_hash and decoded.amount_msat == 1_000
    assert (await backend.balances()).channel_local_msat >= 0
    await backend.cancel_invoice(inv.payment_hash)
    await backend.close()
