"""Unsigned payout PSBTs from public information only.

The payout job runs in the watch-only web process. It picks UTXOs, decides the outputs, and
calls :func:`make_psbt` to get a BIP174 PSBT the signer will accept. Everything it needs is
public and comes from the signer's two descriptors (``satvault signer descriptors``)::

    accounts = accounts_from_descriptors(descriptors, network)   # fingerprint, path, xpub
    psbt_b64 = make_psbt(inputs, outputs, network=network, fingerprint_and_paths=accounts)

Each input names the wallet (``"deposit"`` or ``"hot"``), chain and index it was derived at;
each output is a payment (``change_index=None``) or change to ``m/84'/c'/1'/1/<change_index>``
of the hot wallet (or, in a sweep, the zero-value audit anchor of
:mod:`satvault.signing.anchor`, the only output allowed to be worth 0 sat). The PSBT carries,
per input, the ``witness_utxo``, the ``non_witness_utxo`` (the whole previous transaction,
``PsbtInput.prev_tx``, its witnesses stripped: they do not count in its txid) and a BIP32
derivation (master fingerprint + full path) so the signer can re-derive and check the key,
and the same derivation on change outputs so the signer can tell its own change from a
payment. The previous transaction is what lets the signer trust an input's amount: BIP143
signatures commit to it, but a segwit v0 signer that takes it from ``witness_utxo`` alone can
be made to sign two versions whose lies combine into one valid, overpaying transaction (the
2020 segwit fee attack); the signer refuses an input without it.

The transaction is version 2, locktime 0, and every input signals replace-by-fee (nSequence
0xfffffffd), so a stuck payout can be replaced by a higher-fee PSBT spending the same inputs.

The scripts are checked here too (input script and change script against the derived keys),
and each previous transaction against its outpoint and the coin's recorded amount and script,
so a web-side bookkeeping error surfaces as :class:`PsbtBuildError` instead of a refusal from
the signer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from embit import ec
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.onchain.descriptors import ScriptKind, parse_wallet
from satvault.onchain.errors import OnchainError
from satvault.onchain.keys import ExtendedPubKey, hash160
from satvault.signing.anchor import parse_anchor
from satvault.signing.errors import PsbtBuildError
from satvault.signing.paths import (
    CHANGE_CHAIN,
    HARDENED,
    RECEIVE_CHAIN,
    WalletName,
    account_path,
    format_path,
)

__all__ = [
    "MAX_MONEY_SAT",
    "RBF_SEQUENCE",
    "AccountKey",
    "PsbtInput",
    "PsbtOutput",
    "accounts_from_descriptors",
    "make_psbt",
]

RBF_SEQUENCE = 0xFFFFFFFD
MAX_MONEY_SAT = 21_000_000 * 100_000_000


@dataclass(frozen=True, slots=True)
class PsbtInput:
    """A UTXO of the signer's wallets, as the web side's chain watcher recorded it."""

    txid: str  # display (big-endian) hex, as in explorers and RPC
    vout: int
    value_sat: int
    script_pubkey: bytes
    wallet: str  # "deposit" | "hot"
    chain: int  # 0 receive, 1 change
    index: int
    # The serialized transaction ``txid`` (the ``non_witness_utxo``); make_psbt requires it.
    prev_tx: bytes | None = None


class PsbtOutput(NamedTuple):
    script_pubkey: bytes
    amount_sat: int
    change_index: int | None = None  # set: change to hot m/…/1'/1/<change_index>
    # An output to another of the platform's own descriptors (the cold multisig): each
    # cosigner's (public key, fingerprint, path) and the witness script, so every BIP174
    # wallet, and the hot signer's allow-list, can recognise it.
    bip32: tuple[tuple[bytes, bytes, tuple[int, ...]], ...] = ()
    witness_script: bytes | None = None


@dataclass(frozen=True, slots=True)
class AccountKey:
    """One signer account as the web side knows it: from a descriptor's key origin."""

    fingerprint: bytes  # the signer's master key fingerprint
    path: tuple[int, ...]  # full hardened account path, e.g. (84', 1', 0')
    xpub: ExtendedPubKey

    def pubkey(self, chain: int, index: int) -> bytes:
        return self.xpub.pubkey_at(chain, index)


def accounts_from_descriptors(descriptors: Mapping[str, str], network: str
                              ) -> dict[str, AccountKey]:
    """``{"deposit": AccountKey, "hot": AccountKey}`` from the signer's two descriptors.

    Each must be ``wpkh([fingerprint/84h/c'/a']xpub…/<0;1>/*)`` with the path the signer uses
    for that wallet on ``network``, and both must share one master fingerprint.
    """
    accounts: dict[str, AccountKey] = {}
    for wallet in WalletName:
        text = descriptors.get(wallet.value)
        if text is None:
            raise PsbtBuildError(f"no {wallet.value} descriptor")
        try:
            parsed = parse_wallet(text, network)
        except OnchainError as exc:
            raise PsbtBuildError(f"the {wallet.value} descriptor: {exc}") from exc
        if parsed.kind is not ScriptKind.P2WPKH:
            raise PsbtBuildError(f"the {wallet.value} descriptor is {parsed.kind.value}; "
                                 "the signer only spends wpkh()")
        key = parsed.keys[0]
        origin = key.origin_parts()
        if origin is None:
            raise PsbtBuildError(f"the {wallet.value} descriptor has no key origin "
                                 "[fingerprint/path]; the signer needs it to find its keys")
        fingerprint, path = origin
        expected = account_path(network, wallet)
        if path != expected:
            raise PsbtBuildError(f"the {wallet.value} descriptor's path {format_path(path)} "
                                 f"is not the signer's {format_path(expected)}")
        if key.key.depth != len(path):
            raise PsbtBuildError(f"the {wallet.value} xpub has depth {key.key.depth}, its "
                                 f"origin path has {len(path)} steps")
        accounts[wallet.value] = AccountKey(fingerprint, path, key.key)
    if accounts["deposit"].fingerprint != accounts["hot"].fingerprint:
        raise PsbtBuildError("the deposit and hot descriptors come from different seeds")
    return accounts


def _p2wpkh(pubkey: bytes) -> bytes:
    return b"\x00\x14" + hash160(pubkey)


def _amount(value: object, what: str) -> int:
    if type(value) is not int or not 0 < value <= MAX_MONEY_SAT:
        raise PsbtBuildError(f"{what} must be a whole number of sat in 1..{MAX_MONEY_SAT}, "
                             f"not {value!r}")
    return value


def _derivation(account: AccountKey, chain: int, index: int) -> tuple[ec.PublicKey,
                                                                      DerivationPath]:
    if not 0 <= index < HARDENED:
        raise PsbtBuildError(f"index {index} is not a non-hardened index")
    pub = account.pubkey(chain, index)
    return ec.PublicKey.parse(pub), DerivationPath(account.fingerprint,
                                                   [*account.path, chain, index])


def _prev_tx(n: int, utxo: PsbtInput) -> Transaction:
    """The input's previous transaction, checked against the outpoint and the coin, without
    its witnesses (the txid does not cover them; BIP174 wallets read either form)."""
    where = f"input {n} ({utxo.txid}:{utxo.vout})"
    if utxo.prev_tx is None:
        raise PsbtBuildError(f"{where} has no previous transaction: the signer refuses a "
                             "segwit v0 input without its non_witness_utxo")
    try:
        prev = Transaction.parse(bytes(utxo.prev_tx))
    except Exception as exc:  # embit raises assorted errors on malformed bytes
        raise PsbtBuildError(f"{where}: the previous transaction is not readable: {exc}") \
            from exc
    if bytes(prev.txid()).hex() != utxo.txid.lower():
        raise PsbtBuildError(f"{where}: the previous transaction given is "
                             f"{bytes(prev.txid()).hex()}")
    if utxo.vout >= len(prev.vout) or prev.vout[utxo.vout].value != utxo.value_sat \
            or bytes(prev.vout[utxo.vout].script_pubkey.data) != bytes(utxo.script_pubkey):
        raise PsbtBuildError(f"{where}: the previous transaction's output is not the coin "
                             f"recorded ({utxo.value_sat} sat to the wallet's script)")
    for vin in prev.vin:
        vin.witness = Witness([])
    return prev


def make_psbt(inputs: Sequence[PsbtInput], outputs: Sequence[PsbtOutput], *, network: str,
              fingerprint_and_paths: Mapping[str, AccountKey]) -> str:
    """A base64 PSBT (v0) spending ``inputs`` to ``outputs``; fee = inputs - outputs.

    ``fingerprint_and_paths`` is :func:`accounts_from_descriptors` of the signer's
    descriptors: no private key is involved. Every input needs its ``prev_tx``.
    """
    if not inputs:
        raise PsbtBuildError("a transaction needs at least one input")
    if not outputs:
        raise PsbtBuildError("a transaction needs at least one output")
    accounts: dict[str, AccountKey] = {}
    for wallet in WalletName:
        acc = fingerprint_and_paths.get(wallet.value)
        if acc is None:
            raise PsbtBuildError(f"no account key for the {wallet.value} wallet")
        if acc.path != account_path(network, wallet):
            raise PsbtBuildError(f"the {wallet.value} account path {format_path(acc.path)} "
                                 f"does not belong to {network}")
        accounts[wallet.value] = acc

    vin: list[TransactionInput] = []
    seen: set[tuple[str, int]] = set()
    derivations = []
    total_in = 0
    for n, utxo in enumerate(inputs):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", utxo.txid):
            raise PsbtBuildError(f"input {n}: txid {utxo.txid!r} is not 32 bytes of hex")
        if type(utxo.vout) is not int or not 0 <= utxo.vout < 2**32:
            raise PsbtBuildError(f"input {n}: vout {utxo.vout!r} is out of range")
        outpoint = (utxo.txid.lower(), utxo.vout)
        if outpoint in seen:
            raise PsbtBuildError(f"input {n}: {utxo.txid}:{utxo.vout} is spent twice")
        seen.add(outpoint)
        total_in += _amount(utxo.value_sat, f"input {n} value")
        if utxo.wallet not in accounts:
            raise PsbtBuildError(f"input {n}: wallet {utxo.wallet!r} is neither deposit nor hot")
        if utxo.chain not in (RECEIVE_CHAIN, CHANGE_CHAIN):
            raise PsbtBuildError(f"input {n}: chain {utxo.chain} is neither 0 nor 1")
        pub, der = _derivation(accounts[utxo.wallet], utxo.chain, utxo.index)
        if _p2wpkh(pub.sec()) != bytes(utxo.script_pubkey):
            raise PsbtBuildError(
                f"input {n}: {utxo.txid}:{utxo.vout} is not paid to {utxo.wallet} "
                f"{utxo.chain}/{utxo.index} (the derived P2WPKH script differs)")
        derivations.append((pub, der, _prev_tx(n, utxo)))
        vin.append(TransactionInput(bytes.fromhex(utxo.txid), utxo.vout,
                                    sequence=RBF_SEQUENCE))

    vout: list[TransactionOutput] = []
    change: dict[int, tuple[ec.PublicKey, DerivationPath]] = {}
    total_out = 0
    for n, out in enumerate(outputs):
        spk = bytes(out.script_pubkey)
        if parse_anchor(spk) is not None:  # the audit anchor: worth nothing, nobody's key
            if out.amount_sat != 0 or out.change_index is not None or out.bip32 \
                    or out.witness_script is not None:
                raise PsbtBuildError(f"output {n}: an audit anchor output is worth 0 sat "
                                     "and names no key")
            vout.append(TransactionOutput(0, Script(spk)))
            continue
        total_out += _amount(out.amount_sat, f"output {n} amount")
        if not spk:
            raise PsbtBuildError(f"output {n} has an empty script")
        if out.change_index is not None:
            pub, der = _derivation(accounts[WalletName.HOT.value], CHANGE_CHAIN,
                                   out.change_index)
            if _p2wpkh(pub.sec()) != spk:
                raise PsbtBuildError(f"output {n}: the script is not hot change "
                                     f"1/{out.change_index}")
            change[n] = (pub, der)
        vout.append(TransactionOutput(out.amount_sat, Script(spk)))
    if total_out > total_in:
        raise PsbtBuildError(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")

    psbt = PSBT(Transaction(version=2, vin=vin, vout=vout, locktime=0), unknown={})
    for n, (utxo, (pub, der, prev)) in enumerate(zip(inputs, derivations, strict=True)):
        scope = psbt.inputs[n]
        scope.unknown = {}  # embit shares a mutable default between scopes
        scope.non_witness_utxo = prev
        scope.witness_utxo = TransactionOutput(utxo.value_sat, Script(bytes(utxo.script_pubkey)))
        scope.bip32_derivations[pub] = der
    for n, out_scope in enumerate(psbt.outputs):
        out_scope.unknown = {}
        if n in change:
            pub, der = change[n]
            out_scope.bip32_derivations[pub] = der
        out = outputs[n]
        if out.witness_script is not None:
            ws = bytes(out.witness_script)
            if bytes(out.script_pubkey) != b"\x00\x20" + hashlib.sha256(ws).digest():
                raise PsbtBuildError(f"output {n}: the witness script does not hash to its "
                                     "P2WSH script")
            out_scope.witness_script = Script(ws)
        for pub_bytes, fp, path in out.bip32:
            out_scope.bip32_derivations[ec.PublicKey.parse(pub_bytes)] = \
                DerivationPath(fp, list(path))
    return str(psbt.to_base64())
