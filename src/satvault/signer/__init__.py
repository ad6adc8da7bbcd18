"""The signer process: the only part of satvault that ever holds private keys.

This package is the key-holding side. One encrypted BIP32 seed (:mod:`~satvault.signer.seed`)
yields the deposit wallet (m/84'/c'/0') and the hot wallet (m/84'/c'/1'). A
:class:`~satvault.signer.core.HotSigner` re-checks every input and output of a payout or
sweep PSBT against its own keys, the requested payments and the cold multisig it was given
at start-up (:mod:`~satvault.signer._policy`, :mod:`~satvault.signer._cold`), lets deposit
coins only be swept into the platform's own wallets, caps the value leaving the platform per
transaction and per rolling 24 hours (:mod:`~satvault.signer._limits`), and logs each
signature and each refusal (:mod:`~satvault.signer.audit`). Those defences are the signer's
own configuration, never a caller's argument.
It is served over a unix socket by ``satvault signer serve``
(:mod:`~satvault.signer.server`, :mod:`~satvault.signer.cli`), or wrapped in-process by
:class:`~satvault.signer.inprocess.InProcessSigner` for the embedded demo and the tests.

The web and worker side never imports this package: it talks to a signer and builds PSBTs
from public data through :mod:`satvault.signing`. Only the composition root, the command
line and the demo open a signer from here (``.importlinter`` enforces it). This package may
import :mod:`satvault.signing` (the wire protocol, the error types, the request and
response values, the derivation paths); never the other way round.
"""

from satvault.signer.core import HotSigner
from satvault.signer.inprocess import InProcessSigner
from satvault.signer.seed import (
    SeedMaterial,
    create_seed_file,
    load_seed_file,
    passphrase_from_env_or_file,
)

__all__ = [
    "HotSigner",
    "InProcessSigner",
    "SeedMaterial",
    "create_seed_file",
    "load_seed_file",
    "passphrase_from_env_or_file",
]
