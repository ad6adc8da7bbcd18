"""The web and worker side of signing: talk to a signer, build PSBTs from public data.

satvault's web process is watch-only. It derives addresses from the signer's two
descriptors, builds payout PSBTs from public data (:func:`~satvault.signing.psbt.make_psbt`,
:func:`~satvault.signing.psbt.accounts_from_descriptors`) and asks a :class:`Signer`
(:mod:`~satvault.signing.base`) to sign them, in production a
:class:`~satvault.signing.client.UnixSocketSigner` connected to ``satvault signer serve``.

Nothing here holds or derives a private key. The key-holding process lives in
:mod:`satvault.signer`, which imports this package for what both sides share: the wire
protocol (:mod:`~satvault.signing.wire`), the error types (:mod:`~satvault.signing.errors`),
the request and response values (:class:`Payment`, :class:`SignedTx`) and the public
derivation paths (:mod:`~satvault.signing.paths`). This package never imports
:mod:`satvault.signer` (``.importlinter`` enforces it).
"""

from satvault.signing.base import Payment, SignedTx, Signer
from satvault.signing.client import UnixSocketSigner
from satvault.signing.psbt import (
    AccountKey,
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)

__all__ = [
    "AccountKey",
    "Payment",
    "PsbtInput",
    "PsbtOutput",
    "SignedTx",
    "Signer",
    "UnixSocketSigner",
    "accounts_from_descriptors",
    "make_psbt",
]
