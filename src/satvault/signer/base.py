"""The ``Signer`` capability: what the web process may ask of whatever holds the keys.

Two implementations: :class:`InProcessSigner` wraps a :class:`~satvault.signer.core.HotSigner`
in the same process (demo, tests), and
:class:`~satvault.signer.client.UnixSocketSigner` talks to ``satvault signer serve`` over a
unix socket (production: the keys live in another process, ideally another user). Both raise
the same typed errors from :mod:`satvault.signer.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from satvault.signer.core import HotSigner, Payment, SignedTx

__all__ = ["InProcessSigner", "Signer"]


@runtime_checkable
class Signer(Protocol):
    async def descriptors(self) -> dict[str, str]:
        """``{"deposit": descriptor, "hot": descriptor}``."""
        ...

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        """Check and sign a payout PSBT (see :meth:`HotSigner.sign_payout`)."""
        ...


class InProcessSigner:
    """A :class:`Signer` over a :class:`HotSigner` in this process. Signing takes
    milliseconds, so it runs on the event loop."""

    def __init__(self, hot: HotSigner) -> None:
        self.hot = hot

    async def descriptors(self) -> dict[str, str]:
        return self.hot.descriptors()

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        return self.hot.sign_payout(psbt_b64, payments, max_fee_sat=max_fee_sat,
                                    max_feerate_sat_vb=max_feerate_sat_vb)
