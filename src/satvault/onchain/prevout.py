"""An input's amount, proven by its previous transaction: the check both of satvault's
segwit v0 signers make before they sign (the hot signer, :mod:`satvault.signer._policy`; the
offline cosigner, :mod:`satvault.custody.offline`).

BIP143 signs the amount an input's ``witness_utxo`` states. A lie makes that input's
signature invalid, so one signing cannot move money on its own; but two signings of the same
inputs, each understating another input, give one valid signature each, and together a
valid transaction paying a fee neither signing showed (the "segwit fee attack",
CVE-2020-14199). So an input must carry its ``non_witness_utxo``, the whole previous
transaction: its txid must be the outpoint's, and its output there must be the
``witness_utxo`` (amount and script). The amount is then the chain's, and so is every fee
and cap computed from it.

Pure (embit values in, :class:`~satvault.onchain.errors.UnprovenAmount` out, each signer
turning it into its own refusal) and free of network code: the offline cosigner imports it.
"""

from __future__ import annotations

from typing import Any

from satvault.onchain.errors import UnprovenAmount

__all__ = ["proven_amount"]


def proven_amount(scope: Any, where: str) -> int:
    """The amount of the PSBT input ``scope`` (an embit ``InputScope``), once its previous
    transaction proves its ``witness_utxo``; :class:`UnprovenAmount` otherwise, its message
    starting with ``where`` (the input, as the caller names it)."""
    claimed = scope.witness_utxo
    if claimed is None:
        raise UnprovenAmount(f"{where} has no witness_utxo (the coin's amount and script)")
    value = int(claimed.value)
    prev = scope.non_witness_utxo
    if prev is None:
        raise UnprovenAmount(
            f"{where} has no non_witness_utxo (its previous transaction): an input's amount "
            "is taken only from the previous transaction, whose txid is checked against the "
            "outpoint (without it, two signings with different amounts could pay a fee "
            "neither showed: the segwit fee attack)")
    if bytes(prev.txid()) != bytes(scope.txid):
        raise UnprovenAmount(f"{where}: non_witness_utxo is the transaction "
                             f"{bytes(prev.txid()).hex()}, not the one the input spends")
    if scope.vout >= len(prev.vout):
        raise UnprovenAmount(f"{where}: the previous transaction (non_witness_utxo) has no "
                             f"output {scope.vout}")
    real = prev.vout[scope.vout]
    if int(real.value) != value:
        raise UnprovenAmount(f"{where}: witness_utxo claims {value} sat, the previous "
                             f"transaction (non_witness_utxo) says {real.value} sat")
    if bytes(real.script_pubkey.data) != bytes(claimed.script_pubkey.data):
        raise UnprovenAmount(f"{where}: witness_utxo's script is not the previous "
                             "transaction's (non_witness_utxo)")
    return value
