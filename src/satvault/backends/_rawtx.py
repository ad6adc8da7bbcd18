"""A transaction's bytes as a node answered them, checked against the txid asked for.

Both adapters hand back what the node sent for ``getrawtransaction`` / ``/tx/:txid/hex``; the
bytes go into PSBTs as ``non_witness_utxo``, where the signer hashes them again. A server
that answers another transaction, or something that is not one, is a protocol error here,
where it happened, not a signer refusal later.
"""

from __future__ import annotations

from embit.transaction import Transaction

from satvault.backends.errors import BackendProtocolError

__all__ = ["checked_raw_tx"]


def checked_raw_tx(txid: str, raw_hex: object, source: str) -> bytes:
    """``raw_hex`` as bytes if it is a transaction whose txid is ``txid``."""
    try:
        raw = bytes.fromhex(raw_hex) if isinstance(raw_hex, str) else b""
        got = bytes(Transaction.parse(raw).txid()).hex() if raw else None
    except Exception as exc:  # embit raises assorted errors on malformed bytes
        raise BackendProtocolError(f"{source}: the transaction {txid} is not readable: "
                                   f"{exc}") from exc
    if got != txid.lower():
        raise BackendProtocolError(f"{source}: asked for the transaction {txid}, answered "
                                   f"{got or repr(raw_hex)[:80]}")
    return raw
