"""The audit anchor output: the one data-carrying output satvault ever puts in a transaction.

A sweep may carry the head of the hash-chained audit log (:mod:`satvault.audit`) in one
zero-value ``OP_RETURN`` output, so the chain's state at that moment is written into a block
nobody at the platform can rewrite. Its script is always exactly 46 bytes::

    6a                      OP_RETURN
    2c                      push the next 44 bytes
    53 56 41 31             the tag "SVA1" (satvault anchor, format 1)
    <8 bytes>               the anchored row's seq, big-endian
    <32 bytes>              that row's hash (SHA-256, as stored in audit_events.hash)

(44 data bytes: within the 80 that relay policy allows in an ``OP_RETURN``.) The seq is in
the output so anyone holding a copy of ``audit_events`` can check the anchor without any
other table of ours. Both sides read this module: the sweep planner to build the script, the
signer to recognise it (and refuse every other ``OP_RETURN``), ``satvault audit
verify-anchor`` to read it back from the chain. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["ANCHOR_SCRIPT_LEN", "ANCHOR_TAG", "OP_RETURN", "anchor_script", "find_anchor",
           "is_op_return", "parse_anchor"]

OP_RETURN = 0x6A
ANCHOR_TAG = b"SVA1"
_PAYLOAD_LEN = len(ANCHOR_TAG) + 8 + 32
ANCHOR_SCRIPT_LEN = 2 + _PAYLOAD_LEN
_MAX_SEQ = 2**63 - 1


def is_op_return(script_pubkey: bytes) -> bool:
    return bool(script_pubkey) and script_pubkey[0] == OP_RETURN


def anchor_script(seq: int, hash_hex: str) -> bytes:
    """The output script committing to row ``seq`` whose hash is ``hash_hex``."""
    if type(seq) is not int or not 0 < seq <= _MAX_SEQ:
        raise ValueError(f"an anchored seq is a positive 64-bit integer, not {seq!r}")
    if not isinstance(hash_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", hash_hex):
        raise ValueError("an anchored hash is 64 lowercase hex digits")
    payload = ANCHOR_TAG + seq.to_bytes(8, "big") + bytes.fromhex(hash_hex)
    return bytes([OP_RETURN, _PAYLOAD_LEN]) + payload


def parse_anchor(script_pubkey: bytes) -> tuple[int, str] | None:
    """``(seq, hash hex)`` if the script is exactly an anchor output's, else None."""
    spk = bytes(script_pubkey)
    if len(spk) != ANCHOR_SCRIPT_LEN or spk[:2] != bytes([OP_RETURN, _PAYLOAD_LEN]) \
            or spk[2:6] != ANCHOR_TAG:
        return None
    seq = int.from_bytes(spk[6:14], "big")
    if not 0 < seq <= _MAX_SEQ:
        return None
    return seq, spk[14:].hex()


def find_anchor(outputs: Iterable[tuple[bytes, int]]) -> tuple[int, str] | None:
    """The anchor among ``(script, value)`` outputs: the first zero-value one that parses."""
    for spk, value in outputs:
        if value == 0 and (found := parse_anchor(spk)) is not None:
            return found
    return None
