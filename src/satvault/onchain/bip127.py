"""BIP127 "Simple Proof-of-Reserves Transactions": the commitment input, shared by every side.

A proof of reserves is a transaction that spends the coins it proves, with one extra input
in front, the *commitment input*, whose previous outpoint is::

    txid  = SHA-256( UTF-8 "Proof-of-Reserves: " + message )      (one SHA-256, not SHA-256d)
    vout  = 0

and exactly one output worth the sum of the other inputs (no fee). The commitment input
spends no coin (nobody can make a transaction with that txid), so the proof can never be
mined, and the other inputs' ``SIGHASH_ALL`` signatures commit to it, so they are valid in
no other transaction: they prove control of the coins without putting them at risk.

Byte order, where other tools disagree. The BIP says "the txid part of the previous outpoint
[is] set to the SHA-256 hash" and has no test vector. An outpoint is a serialization
structure (32 hash bytes, 4 index bytes) and its hash part is written in the hash
function's output order: that is how the BIP author's reference tool
(``stevenroose/reserves``, ``challenge_txin``: the SHA-256 output copied into rust-bitcoin's
hash type, whose bytes are the serialized bytes) and BDK (``bdk-reserves``,
``Txid::from_raw_hash``) build it. So the 32 digest bytes appear **as is** in the
serialized transaction, and the txid *shown* in explorers and RPC (``display_txid``) is the
digest reversed. Tools that paste the digest's hex as the displayed txid (and so serialize
it reversed) are wrong. BDK, for its part, hashes with SHA-256d, which is not the BIP's
SHA-256: its commitments differ from ours for the same message (a test records both).

The BIP also adds a PSBT input field ``PSBT_IN_POR_COMMITMENT = 0x09`` (listed in BIP174)
carrying the UTF-8 message, so signing devices can show it; satvault writes it on input 0.

Pure and dependency-free on purpose: the hot signer, the watch-only side and the offline
cosigner tool all import it.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "MAX_MESSAGE_BYTES",
    "POR_PREFIX",
    "PSBT_IN_POR_COMMITMENT",
    "commitment_outpoint",
    "display_txid",
    "message_bytes",
]

POR_PREFIX = "Proof-of-Reserves: "
PSBT_IN_POR_COMMITMENT = b"\x09"
MAX_MESSAGE_BYTES = 1_000  # a challenge, not a document


def message_bytes(message: str) -> bytes:
    """The UTF-8 message, checked: non-empty (BIP127 proofs must be tied to something) and at
    most :data:`MAX_MESSAGE_BYTES`. Raises ``ValueError``."""
    if not isinstance(message, str) or not message.strip():
        raise ValueError("the proof-of-reserves message must be a non-empty string")
    raw = message.encode("utf-8")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError(f"the message is {len(raw)} bytes; at most {MAX_MESSAGE_BYTES}")
    return raw


def commitment_outpoint(message: str) -> tuple[bytes, int]:
    """``(txid bytes as serialized, vout)`` of the commitment input for ``message``."""
    digest = hashlib.sha256(POR_PREFIX.encode("utf-8") + message_bytes(message)).digest()
    return digest, 0


def display_txid(message: str) -> str:
    """The commitment txid the way explorers and RPC show txids (serialized bytes reversed)."""
    return commitment_outpoint(message)[0][::-1].hex()
