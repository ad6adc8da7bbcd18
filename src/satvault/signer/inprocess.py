"""A :class:`~satvault.signing.base.Signer` over a :class:`HotSigner` in this process: the
embedded demo and the tests. The keys then live in the server process; production runs
``satvault signer serve`` instead and reaches it through
:class:`~satvault.signing.client.UnixSocketSigner`.
"""

from __future__ import annotations

from collections.abc import Sequence

from satvault.signer.core import HotSigner
from satvault.signing.base import Payer, Payment, SignedTx

__all__ = ["InProcessSigner"]


class InProcessSigner:
    """A :class:`~satvault.signing.base.Signer` over a :class:`HotSigner` in this process.
    Signing takes milliseconds, so it runs on the event loop."""

    def __init__(self, hot: HotSigner) -> None:
        self.hot = hot

    async def descriptors(self) -> dict[str, str]:
        return self.hot.descriptors()

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        return self.hot.sign_payout(psbt_b64, payments, max_fee_sat=max_fee_sat,
                                    max_feerate_sat_vb=max_feerate_sat_vb)

    async def abandon(self, txid: str, *, reason: str) -> bool:
        return self.hot.abandon(txid, reason=reason)

    async def payers(self, refs: Sequence[str]) -> list[Payer]:
        return self.hot.payers(refs)

    async def sign_reserves(self, psbt_b64: str, message: str) -> str:
        return self.hot.sign_reserves(psbt_b64, message)
