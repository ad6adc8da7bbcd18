"""The signer: the only part of satvault that ever holds private keys.

One encrypted BIP32 seed (:mod:`~satvault.signer.seed`) yields the deposit wallet
(m/84'/c'/0') and the hot wallet (m/84'/c'/1'). The web process is watch-only: it derives
addresses from the signer's descriptors, builds payout PSBTs from public data
(:func:`~satvault.signer.psbt.make_psbt`) and asks a :class:`Signer` to sign them. The signer
re-checks every input and output against its own keys and the requested payments before
signing (:class:`~satvault.signer.core.HotSigner`), and logs each signature
(:mod:`~satvault.signer.audit`).

Reach it in-process (:class:`InProcessSigner`) or over a unix socket
(:class:`UnixSocketSigner` ↔ ``satvault signer serve``).
"""

from satvault.signer.base import InProcessSigner, Signer
from satvault.signer.client import UnixSocketSigner
from satvault.signer.core import HotSigner, Payment, SignedTx
from satvault.signer.psbt import (
    AccountKey,
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)
from satvault.signer.seed import (
    SeedMaterial,
    create_seed_file,
    load_seed_file,
    passphrase_from_env_or_file,
)

__all__ = [
    "AccountKey",
    "HotSigner",
    "InProcessSigner",
    "Payment",
    "PsbtInput",
    "PsbtOutput",
    "SeedMaterial",
    "SignedTx",
    "Signer",
    "UnixSocketSigner",
    "accounts_from_descriptors",
    "create_seed_file",
    "load_seed_file",
    "make_psbt",
    "passphrase_from_env_or_file",
]
