"""What the hot signer checks before it signs a BIP127 proof of reserves, and the signing.

A proof of reserves (see :mod:`satvault.onchain.bip127`) is a transaction the signer signs
without wanting it mined. It signs one only when

* input 0 is exactly the commitment to ``message``: previous txid = SHA-256("Proof-of-Reserves:
  " + message), vout 0; it carries no derivation or signature of ours;
* there is exactly one output, and it is provably unspendable (``OP_RETURN``), worth exactly
  the sum of the other inputs' ``witness_utxo`` amounts (no fee);
* every other input carries a ``witness_utxo``; those naming this seed are checked as in a
  payout (one P2WPKH key of the deposit or hot account that pays exactly that script) and
  signed; the others (cold multisig coins, signed by the cosigners) are left alone;
* only ``SIGHASH_ALL`` anywhere.

Why none of these signatures can ever move money. A ``SIGHASH_ALL`` signature under BIP143
commits to ``hashPrevouts``, the hash of *every* outpoint the transaction spends, including
the commitment outpoint ``(SHA-256("Proof-of-Reserves: " + message), 0)``. A transaction is
valid only if each outpoint it spends exists, so the signature could only be used in a
transaction spending an output of a transaction whose txid (SHA-256d of its serialization)
is that value: finding one means finding a transaction whose single SHA-256 equals the
UTF-8 bytes "Proof-of-Reserves: " followed by the message: a 2^152-work preimage at the very
least (the 19 fixed prefix bytes alone). No other sighash type is signed, because
``ANYONECANPAY`` drops ``hashPrevouts`` and would make the signature valid in a real
transaction. As a second lock the only output is ``OP_RETURN`` and there is no fee, so
even that impossible transaction would pay nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from embit.psbt import PSBT
from embit.script import Script, Witness, p2pkh_from_p2wpkh
from embit.transaction import SIGHASH

from satvault.onchain.bip127 import PSBT_IN_POR_COMMITMENT, commitment_outpoint
from satvault.signer._hd import Keyring, p2wpkh_script
from satvault.signing.errors import InvalidPsbt, InvalidRequest, OutputMismatch, UnknownInput
from satvault.signing.paths import (
    CHANGE_CHAIN,
    HARDENED,
    RECEIVE_CHAIN,
    WalletName,
    account_path,
    format_path,
)

__all__ = ["ReservesPlan", "sign_reserves"]

_OP_RETURN = 0x6A


@dataclass(frozen=True, slots=True)
class ReservesPlan:
    signed: tuple[tuple[int, str, int, str], ...]  # (input, outpoint, value_sat, path)
    total_sat: int  # every input but the commitment: ours and the others


def _wallet_of(path: tuple[int, ...], network: str) -> WalletName | None:
    if len(path) != 5 or path[3] not in (RECEIVE_CHAIN, CHANGE_CHAIN) or path[4] >= HARDENED:
        return None
    return next((w for w in WalletName if path[:3] == account_path(network, w)), None)


def sign_reserves(psbt: PSBT, message: str, keyring: Keyring) -> ReservesPlan:
    """Check ``psbt`` (see the module docstring) and sign our inputs in place, finalized
    (BIP174: the final witness replaces the derivation). Raises a ``SigningRefused``
    subclass, having signed nothing, when a check fails."""
    try:
        digest, vout = commitment_outpoint(message)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if len(psbt.inputs) < 2:
        raise InvalidPsbt("a proof of reserves has the commitment input and at least one coin")
    tx = psbt.tx
    # embit keeps txids in display order; the serialized outpoint holds them reversed, and
    # the BIP127 digest is the serialized form (see satvault.onchain.bip127).
    if bytes(tx.vin[0].txid)[::-1] != digest or tx.vin[0].vout != vout:
        raise InvalidPsbt("input 0 is not the BIP127 commitment to this message (previous "
                          "txid SHA-256(\"Proof-of-Reserves: \" + message), vout 0)")
    first = psbt.inputs[0]
    if first.partial_sigs or first.final_scriptwitness or first.final_scriptsig or any(
            d.fingerprint == keyring.fingerprint for d in first.bip32_derivations.values()):
        raise InvalidPsbt("input 0, the commitment, must carry no signature and no key of ours")
    carried = first.unknown.get(PSBT_IN_POR_COMMITMENT)
    if carried is not None and bytes(carried) != message.encode("utf-8"):
        raise InvalidPsbt("input 0's PSBT_IN_POR_COMMITMENT is another message")
    if len(tx.vout) != 1:
        raise OutputMismatch(f"a proof of reserves has exactly one output, not {len(tx.vout)}")
    out_script = bytes(tx.vout[0].script_pubkey.data)
    if not out_script or out_script[0] != _OP_RETURN:
        raise OutputMismatch("the proof's output must be unspendable (OP_RETURN); the signer "
                             "does not sign a proof that could pay someone")

    total = 0
    ours: list[tuple[int, WalletName, tuple[int, ...], bytes, int]] = []
    seen = {(bytes(tx.vin[0].txid), tx.vin[0].vout)}
    for i in range(1, len(psbt.inputs)):
        scope = psbt.inputs[i]
        outpoint = f"{bytes(tx.vin[i].txid).hex()}:{tx.vin[i].vout}"
        where = f"input {i} ({outpoint})"
        key = (bytes(tx.vin[i].txid), tx.vin[i].vout)
        if key in seen:
            raise InvalidPsbt(f"{where} spends an outpoint a second time (or the commitment)")
        seen.add(key)
        if scope.witness_utxo is None:
            raise UnknownInput(f"{where} has no witness_utxo: the proof's sum needs every "
                               "coin's amount")
        if scope.sighash_type not in (None, SIGHASH.ALL):
            raise InvalidPsbt(f"{where} asks for sighash {scope.sighash_type}; only ALL is "
                              "signed (other types would not commit to the commitment input)")
        value = int(scope.witness_utxo.value)
        if value <= 0:
            raise InvalidPsbt(f"{where} claims a value of {value} sat")
        total += value
        mine = [(bytes(pub.sec()), tuple(d.derivation))
                for pub, d in scope.bip32_derivations.items()
                if d.fingerprint == keyring.fingerprint]
        if not mine:
            continue  # a cold coin: its cosigners sign it
        if len(mine) > 1 or scope.witness_script is not None or scope.partial_sigs:
            raise InvalidPsbt(f"{where} names this signer but is not an unsigned single-key "
                              "P2WPKH input")
        pub, path = mine[0]
        wallet = _wallet_of(path, keyring.network)
        if wallet is None:
            raise UnknownInput(f"{where} derives at {format_path(path)}, which is in neither "
                               "the deposit nor the hot account")
        if keyring.public_key(wallet, path[3], path[4]) != pub:
            raise UnknownInput(f"{where}: the key at {format_path(path)} is not the one the "
                               "PSBT names")
        if p2wpkh_script(pub) != bytes(scope.witness_utxo.script_pubkey.data):
            raise UnknownInput(f"{where} is not paid to the signer's P2WPKH key at "
                               f"{format_path(path)}")
        ours.append((i, wallet, path, pub, value))
    if not ours:
        raise UnknownInput(f"no input of the proof belongs to this signer "
                           f"({keyring.fingerprint.hex()}); nothing to sign")
    if int(tx.vout[0].value) != total:
        raise OutputMismatch(f"the proof's output is {int(tx.vout[0].value)} sat but its "
                             f"coins hold {total} sat; BIP127 wants them equal (no fee)")

    signatures = []
    for i, wallet, path, pub, value in ours:
        key = keyring.private_key(wallet, path[3], path[4])
        script_code = p2pkh_from_p2wpkh(Script(p2wpkh_script(pub)))
        digest_i = tx.sighash_segwit(i, script_code, value, sighash=SIGHASH.ALL)
        sig = key.sign(digest_i)
        if not key.get_public_key().verify(sig, digest_i):
            raise InvalidPsbt(f"input {i}: the signature does not verify")
        signatures.append((i, Witness([sig.serialize() + bytes([SIGHASH.ALL]), pub])))
    for i, witness in signatures:
        scope = psbt.inputs[i]
        scope.final_scriptwitness = witness
        scope.partial_sigs.clear()
        scope.bip32_derivations.clear()
        scope.sighash_type = None
    return ReservesPlan(tuple((i, f"{bytes(tx.vin[i].txid).hex()}:{tx.vin[i].vout}", v,
                               format_path(p)) for i, _w, p, _pub, v in ours), total)
