"""The ``Signer`` capability: what the web process may ask of whatever holds the keys, and
the plain values that cross the boundary (:class:`Payment` in, :class:`SignedTx` out).

Two implementations: :class:`~satvault.signer.inprocess.InProcessSigner` wraps a
:class:`~satvault.signer.core.HotSigner` in the same process (demo, tests), and
:class:`~satvault.signing.client.UnixSocketSigner` talks to ``satvault signer serve`` over a
unix socket (production: the keys live in another process, ideally another user). Both raise
the same typed errors from :mod:`satvault.signing.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from satvault.signing.errors import SignerUnavailable

__all__ = ["NoSigner", "Payer", "Payment", "SignedTx", "Signer"]


@dataclass(frozen=True, slots=True)
class Payment:
    """One requested payment: ``amount_sat`` to ``script_pubkey``; ``ref`` names it in errors
    and in the audit log (a withdrawal id, say)."""

    script_pubkey: bytes
    amount_sat: int
    ref: str


@dataclass(frozen=True, slots=True)
class SignedTx:
    txid: str
    raw_hex: str  # the fully signed transaction, ready to broadcast
    psbt_b64: str  # the finalized PSBT
    fee_sat: int


@dataclass(frozen=True, slots=True)
class Payer:
    """A transaction the signer signed that pays some of the refs asked about, and that was
    not given up: the outpoints it spends (``txid:vout``) and every ref it pays."""

    txid: str
    outpoints: tuple[str, ...]
    refs: tuple[str, ...]


@runtime_checkable
class Signer(Protocol):
    async def descriptors(self) -> dict[str, str]:
        """``{"deposit": descriptor, "hot": descriptor}``."""
        ...

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        """Check and sign a payout PSBT, or a sweep (no payments: every output is the
        platform's own). See ``HotSigner.sign_payout`` in :mod:`satvault.signer.core`."""
        ...

    async def abandon(self, txid: str, *, reason: str) -> bool:
        """Give up a transaction the signer signed that can never confirm (refused by the
        node and never accepted by one), so that its payments may be paid from other coins;
        True if it was given up now. See ``HotSigner.abandon``."""
        ...

    async def payers(self, refs: Sequence[str]) -> list[Payer]:
        """The live (not given up) transactions the signer signed that pay any of ``refs``,
        by txid. See ``HotSigner.payers``."""
        ...

    async def sign_reserves(self, psbt_b64: str, message: str) -> str:
        """Sign the signer's inputs of a BIP127 proof of reserves for ``message`` (see
        ``HotSigner.sign_reserves``); returns the PSBT with them finalized."""
        ...


class NoSigner:
    """The signer of a command that signs nothing (``satvault custody sweep`` plans a move
    the payout worker signs): it opens no seed and no socket, and every call raises
    :class:`~satvault.signing.errors.SignerUnavailable`."""

    def __init__(self, why: str = "this command opens no signer") -> None:
        self.why = why

    async def descriptors(self) -> dict[str, str]:
        raise SignerUnavailable(self.why)

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        raise SignerUnavailable(self.why)

    async def abandon(self, txid: str, *, reason: str) -> bool:
        raise SignerUnavailable(self.why)

    async def payers(self, refs: Sequence[str]) -> list[Payer]:
        raise SignerUnavailable(self.why)

    async def sign_reserves(self, psbt_b64: str, message: str) -> str:
        raise SignerUnavailable(self.why)
