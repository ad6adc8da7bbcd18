"""The cold wallet, watch-only: its addresses, and the PSBTs its offline cosigners sign.

The cold tier is a ``wsh(sortedmulti(m, KEY, …))`` descriptor (2-of-3 by default, 3-of-5
supported) whose keys are held by people with offline machines. Each ``KEY`` is a cosigner's
BIP48 account key with its origin, ``[fingerprint/48h/c'/0h/2h]tpub…/<0;1>/*``; satvault
holds none of the private keys. Everything here is pure (values in, values out)::

    wallet = ColdWallet.from_descriptor(text, "regtest")
    addr = wallet.derive(0, 7)              # witness script, P2WSH script and address, and
                                            # each cosigner's (pubkey, fingerprint, full path)
    psbt_b64 = make_cold_psbt([ColdInput(txid, vout, value, 0, 7, prev_tx=raw)], outputs,
                              wallet=wallet, network="regtest")
    # … every cosigner adds a partial signature (``satvault cold sign``, a hardware wallet,
    # Sparrow, BDK, embit) …
    merged = combine([a, b], names=["alice.psbt", "bob.psbt"])
    check_outputs(merged, stored_unsigned_tx)
    final = finalize(merged, wallet)        # raw_hex, txid: broadcast it

A cold PSBT is what BIP174 wallets expect from a multisig coordinator: every input carries
its ``witness_utxo``, its previous transaction (``non_witness_utxo``: the cosigners take the
amount only from it), its ``witness_script`` and one BIP32 derivation per cosigner (master
fingerprint + full path), so each signer can find its key and check the script; change back
to the cold wallet (chain 1) carries the same, and an output to the hot wallet carries the
hot signer's derivation (passed by the caller) so wallets show it as "ours". Version 2,
locktime 0, every input signalling replace-by-fee, as :mod:`satvault.signing.psbt`.

Nothing in a PSBT is trusted at the end: :func:`finalize` re-derives each input's witness
script from the descriptor, verifies every partial signature against the BIP143 sighash
(``SIGHASH_ALL`` only; a bad one is refused, naming the input and the key) and builds the
witness CHECKMULTISIG wants: ``[b"", m signatures in the order of the sorted keys, script]``.

QR export (:func:`export_files`): a PSBT of at most :data:`QR_SINGLE_MAX_CHARS` base64
characters is one QR code (version ≤ 28 at error level L, 129 modules: still read easily
off a screen by a webcam). Larger ones become a QR *structured append* sequence
(ISO/IEC 18004, ``segno.make_sequence``) of up to 16 symbols of about
:data:`QR_PART_CHARS` characters each, written as numbered PNGs; a decoder that reports the
sequence index (e.g. ZXing / ``zxing-cpp``) joins the parts in index order. Beyond 16 parts
the PSBT travels as the ``.psbt`` file only. (BBQr and UR animated codes are not produced.)

This module imports no network code, so the offline cosigner tool can use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from embit import bech32, ec
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from satvault.custody.errors import (
    BadSignature,
    ColdPsbtError,
    ColdWalletError,
    NotEnoughSignatures,
    PsbtMismatch,
    QrExportError,
)
from satvault.onchain.addresses import HRP
from satvault.onchain.descriptors import ScriptKind, parse_wallet
from satvault.onchain.errors import OnchainError
from satvault.onchain.keys import ExtendedPubKey, hash160

__all__ = [
    "HARDENED",
    "MAX_MONEY_SAT",
    "QR_MAX_PARTS",
    "QR_PART_CHARS",
    "QR_SINGLE_MAX_CHARS",
    "RBF_SEQUENCE",
    "ColdAddress",
    "ColdInput",
    "ColdOutput",
    "ColdWallet",
    "Cosigner",
    "FinalTx",
    "InputSignatures",
    "KeyOrigin",
    "LeadInput",
    "check_outputs",
    "combine",
    "export_files",
    "extract",
    "finalize",
    "finalize_cold_inputs",
    "format_path",
    "inputs_without_prev_tx",
    "make_cold_psbt",
    "multisig_script",
    "parse_multisig",
    "read_psbt",
    "read_psbt_file",
    "signature_count",
    "unsigned_txid",
    "verify_ecdsa",
]

HARDENED = 0x80000000
RBF_SEQUENCE = 0xFFFFFFFD
MAX_MONEY_SAT = 21_000_000 * 100_000_000
QR_SINGLE_MAX_CHARS = 1_500
QR_PART_CHARS = 1_000
QR_MAX_PARTS = 16  # the structured-append maximum


# ------------------------------------------------------------------------------ keys, scripts

@dataclass(frozen=True, slots=True)
class KeyOrigin:
    """A public key and where it comes from: the master fingerprint and the full path."""

    pubkey: bytes
    fingerprint: bytes
    path: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.fingerprint.hex()}/{format_path(self.path, prefix='')}"


def format_path(path: Iterable[int], *, prefix: str = "m") -> str:
    steps = [f"{s - HARDENED}h" if s >= HARDENED else str(s) for s in path]
    return "/".join([prefix, *steps]) if prefix else "/".join(steps)


def multisig_script(m: int, pubkeys: Sequence[bytes]) -> bytes:
    """``OP_m <pk>… OP_n OP_CHECKMULTISIG`` (keys in the order given)."""
    if not 1 <= m <= len(pubkeys) <= 15:
        raise ColdWalletError(f"invalid multisig {m}-of-{len(pubkeys)}")
    script = bytes([0x50 + m])
    for pub in pubkeys:
        script += b"\x21" + pub
    return script + bytes([0x50 + len(pubkeys), 0xAE])


def parse_multisig(script: bytes) -> tuple[int, list[bytes]] | None:
    """``(m, pubkeys)`` of a bare ``OP_m <33-byte keys> OP_n OP_CHECKMULTISIG``, else None."""
    if len(script) < 3 + 34 or script[-1] != 0xAE:
        return None
    m, n = script[0] - 0x50, script[-2] - 0x50
    if not 1 <= m <= n <= 15 or len(script) != 3 + 34 * n:
        return None
    keys = []
    for k in range(n):
        chunk = script[1 + 34 * k: 1 + 34 * (k + 1)]
        if chunk[0] != 0x21 or chunk[1] not in (2, 3):
            return None
        keys.append(bytes(chunk[1:]))
    return m, keys


def p2wsh(witness_script: bytes) -> bytes:
    return b"\x00\x20" + hashlib.sha256(witness_script).digest()


def p2wpkh(pubkey: bytes) -> bytes:
    return b"\x00\x14" + hash160(pubkey)


def verify_ecdsa(tx: Transaction, index: int, script_code: bytes, value_sat: int,
                 pubkey: bytes, signature: bytes) -> str | None:
    """None if ``signature`` (DER + sighash byte) by ``pubkey`` signs input ``index`` of
    ``tx`` under BIP143 with ``SIGHASH_ALL``; otherwise why not."""
    if not signature or signature[-1] != SIGHASH.ALL:
        return (f"its sighash type is {signature[-1] if signature else 'missing'}; only "
                "SIGHASH_ALL (1) is accepted")
    try:
        sig = ec.Signature.parse(signature[:-1])
        pub = ec.PublicKey.parse(pubkey)
    except Exception:  # embit raises assorted errors on malformed DER or points
        return "it is not a DER signature by a valid public key"
    digest = tx.sighash_segwit(index, Script(script_code), value_sat, sighash=SIGHASH.ALL)
    if not pub.verify(sig, digest):
        return "it does not verify against the BIP143 sighash"
    return None


# ------------------------------------------------------------------------------ the wallet

@dataclass(frozen=True, slots=True)
class Cosigner:
    """One cosigner as the descriptor names it: master fingerprint, account path, xpub."""

    fingerprint: bytes
    path: tuple[int, ...]  # the account path, e.g. 48h/1h/0h/2h
    xpub: ExtendedPubKey

    def key(self, chain: int, index: int) -> KeyOrigin:
        return KeyOrigin(self.xpub.pubkey_at(chain, index), self.fingerprint,
                         (*self.path, chain, index))


@dataclass(frozen=True, slots=True)
class ColdAddress:
    chain: int
    index: int
    witness_script: bytes
    script_pubkey: bytes
    address: str
    keys: tuple[KeyOrigin, ...]  # in the witness script's (sorted) order


@dataclass(frozen=True, slots=True)
class ColdWallet:
    threshold: int
    cosigners: tuple[Cosigner, ...]
    network: str
    descriptor: str  # canonical, with checksum
    _by_account: dict[tuple[bytes, tuple[int, ...]], int] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.cosigners)

    @classmethod
    def from_descriptor(cls, text: str, network: str) -> ColdWallet:
        """Read ``wsh(sortedmulti(m,[fp/path]xpub/<0;1>/*,…))`` for ``network``.

        Every key needs its origin (a cosigner finds its key by fingerprint and path); two
        keys from one master seed, or the same key twice, are refused: one person would hold
        two of the m votes."""
        try:
            parsed = parse_wallet(text, network)
        except OnchainError as exc:
            raise ColdWalletError(f"the cold descriptor: {exc}") from exc
        if parsed.kind is not ScriptKind.P2WSH_MULTI or not parsed.sorted_keys:
            raise ColdWalletError("the cold wallet must be wsh(sortedmulti(m, KEY, ...)); "
                                  f"this descriptor is {parsed.kind.value}"
                                  + ("" if parsed.sorted_keys else " with multi()"))
        # As the signer refuses them (found from outside: the web side and the CLI took
        # 1-of-n, which one cosigner alone could spend).
        if len(parsed.keys) < 2 or parsed.threshold < 2:
            raise ColdWalletError(f"the cold descriptor is {parsed.threshold}-of-"
                                  f"{len(parsed.keys)}; a cold wallet needs at least two "
                                  "signatures of several offline cosigners")
        cosigners = []
        for k, key in enumerate(parsed.keys):
            origin = key.origin_parts()
            if origin is None:
                raise ColdWalletError(f"cold key {k + 1} has no origin [fingerprint/path]; "
                                      "cosigners need it to find their key")
            fingerprint, path = origin
            if key.key.depth != len(path):
                raise ColdWalletError(f"cold key {k + 1}: the xpub has depth {key.key.depth}, "
                                      f"its origin path has {len(path)} steps")
            cosigners.append(Cosigner(fingerprint, path, key.key))
        fps = [c.fingerprint for c in cosigners]
        if len(set(fps)) != len(fps):
            raise ColdWalletError("two cold keys share a master fingerprint: one seed would "
                                  "hold two votes")
        if len({c.xpub.pubkey for c in cosigners}) != len(cosigners):
            raise ColdWalletError("the same key appears twice in the cold descriptor")
        wallet = cls(parsed.threshold, tuple(cosigners), network, parsed.descriptor())
        for n, c in enumerate(cosigners):
            wallet._by_account[(c.fingerprint, c.path)] = n
        return wallet

    def derive(self, chain: int, index: int) -> ColdAddress:
        if chain not in (0, 1):
            raise ColdWalletError(f"chain {chain} is neither receive (0) nor change (1)")
        if not 0 <= index < HARDENED:
            raise ColdWalletError(f"index {index} is not a non-hardened index")
        keys = sorted((c.key(chain, index) for c in self.cosigners), key=lambda k: k.pubkey)
        ws = multisig_script(self.threshold, [k.pubkey for k in keys])
        spk = p2wsh(ws)
        address = bech32.encode(HRP[self.network], 0, spk[2:])
        return ColdAddress(chain, index, ws, spk, address, tuple(keys))

    def locate(self, derivations: Iterable[tuple[bytes, tuple[int, ...]]]
               ) -> tuple[int, int] | None:
        """``(chain, index)`` if one of ``(fingerprint, full path)`` is a cosigner's key."""
        for fp, path in derivations:
            if len(path) >= 2 and (fp, tuple(path[:-2])) in self._by_account:
                chain, index = path[-2], path[-1]
                if chain in (0, 1) and index < HARDENED:
                    return chain, index
        return None


# ------------------------------------------------------------------------------ building

@dataclass(frozen=True, slots=True)
class ColdInput:
    """A cold-wallet UTXO: ``txid`` in display hex, the chain/index it was paid to."""

    txid: str
    vout: int
    value_sat: int
    chain: int
    index: int
    script_pubkey: bytes | None = None  # if given, checked against the derived script
    # The serialized transaction ``txid``: the input's ``non_witness_utxo``, checked against
    # the outpoint, the amount and the script. A spend needs it (the cosigners take the
    # amount only from it: the segwit fee attack); a proof of reserves does not.
    prev_tx: bytes | None = None


class ColdOutput(NamedTuple):
    """An output. ``cold_change_index``: change back to the cold wallet's chain 1 at that
    index (the script is checked). ``derivations``: key origins to attach, e.g. the hot
    signer's ``KeyOrigin(pubkey, fingerprint, (84h, 1h, 1h, 0, i))`` for a refill output."""

    script_pubkey: bytes
    amount_sat: int
    cold_change_index: int | None = None
    derivations: tuple[KeyOrigin, ...] = ()


class LeadInput(NamedTuple):
    """An input placed before the cold ones, as is: the BIP127 commitment input, or a hot
    P2WPKH coin in a proof of reserves (with the hot signer's derivation)."""

    txid: str  # display hex
    vout: int
    value_sat: int
    script_pubkey: bytes
    derivations: tuple[KeyOrigin, ...] = ()
    fields: Mapping[bytes, bytes] = {}  # extra PSBT input fields (key -> value)


def _amount(value: object, what: str, *, zero: bool = False) -> int:
    low = 0 if zero else 1
    if type(value) is not int or not low <= value <= MAX_MONEY_SAT:
        raise ColdPsbtError(f"{what} must be a whole number of sat in {low}..{MAX_MONEY_SAT}, "
                            f"not {value!r}")
    return value


def _outpoint(n: int, txid: str, vout: int, seen: set[tuple[str, int]]) -> TransactionInput:
    if not isinstance(txid, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", txid):
        raise ColdPsbtError(f"input {n}: txid {txid!r} is not 32 bytes of hex")
    if type(vout) is not int or not 0 <= vout < 2**32:
        raise ColdPsbtError(f"input {n}: vout {vout!r} is out of range")
    key = (txid.lower(), vout)
    if key in seen:
        raise ColdPsbtError(f"input {n}: {txid}:{vout} is spent twice")
    seen.add(key)
    return TransactionInput(bytes.fromhex(txid), vout)


def _attach(scope: Any, keys: Iterable[KeyOrigin]) -> None:
    for k in keys:
        scope.bip32_derivations[ec.PublicKey.parse(k.pubkey)] = DerivationPath(
            k.fingerprint, list(k.path))


def _prev_tx(n: int, utxo: ColdInput, script_pubkey: bytes) -> Transaction:
    """The input's previous transaction, checked, its witnesses stripped (not in the txid)."""
    where = f"input {n} ({utxo.txid}:{utxo.vout})"
    try:
        prev = Transaction.parse(bytes(utxo.prev_tx or b""))
    except Exception as exc:  # embit raises assorted errors on malformed bytes
        raise ColdPsbtError(f"{where}: the previous transaction is not readable: {exc}") \
            from exc
    if bytes(prev.txid()).hex() != utxo.txid.lower() or utxo.vout >= len(prev.vout) \
            or prev.vout[utxo.vout].value != utxo.value_sat \
            or bytes(prev.vout[utxo.vout].script_pubkey.data) != script_pubkey:
        raise ColdPsbtError(f"{where}: the previous transaction given is not the one that "
                            f"paid {utxo.value_sat} sat to this cold address")
    for vin in prev.vin:
        vin.witness = Witness([])
    return prev


def make_cold_psbt(inputs: Sequence[ColdInput], outputs: Sequence[ColdOutput], *,
                   wallet: ColdWallet | None, network: str,
                   lead_inputs: Sequence[LeadInput] = (),
                   sequence: int = RBF_SEQUENCE, locktime: int = 0,
                   unminable: bool = False) -> str:
    """A base64 PSBT (v0) spending ``lead_inputs`` then the cold ``inputs`` to ``outputs``;
    fee = inputs - outputs. No private key is involved.

    Every cold input needs its ``prev_tx``: the cosigners refuse an input without its
    previous transaction. ``unminable``: the transaction can never be mined (a BIP127 proof,
    whose commitment input spends no coin), so its cold inputs may go without."""
    if inputs and wallet is None:
        raise ColdPsbtError("cold inputs need the cold wallet")
    if wallet is not None and network != wallet.network:
        raise ColdPsbtError(f"the cold wallet is for {wallet.network}, not {network}")
    if not inputs and not lead_inputs:
        raise ColdPsbtError("a transaction needs at least one input")
    if not outputs:
        raise ColdPsbtError("a transaction needs at least one output")
    seen: set[tuple[str, int]] = set()
    vin: list[TransactionInput] = []
    total_in = 0
    for n, lead in enumerate(lead_inputs):
        vin.append(_outpoint(n, lead.txid, lead.vout, seen))
        total_in += _amount(lead.value_sat, f"input {n} value", zero=True)
    addrs: list[ColdAddress] = []
    for k, utxo in enumerate(inputs):
        n = len(lead_inputs) + k
        vin.append(_outpoint(n, utxo.txid, utxo.vout, seen))
        total_in += _amount(utxo.value_sat, f"input {n} value")
        assert wallet is not None
        try:
            addr = wallet.derive(utxo.chain, utxo.index)
        except ColdWalletError as exc:
            raise ColdPsbtError(f"input {n}: {exc}") from exc
        if utxo.script_pubkey is not None and bytes(utxo.script_pubkey) != addr.script_pubkey:
            raise ColdPsbtError(f"input {n}: {utxo.txid}:{utxo.vout} is not paid to cold "
                                f"{utxo.chain}/{utxo.index} (the derived P2WSH script differs)")
        if utxo.prev_tx is None and not unminable:
            raise ColdPsbtError(f"input {n} ({utxo.txid}:{utxo.vout}) has no previous "
                                "transaction: the cosigners take a cold input's amount only "
                                "from it (its non_witness_utxo)")
        addrs.append(addr)
    for tin in vin:
        tin.sequence = sequence

    vout: list[TransactionOutput] = []
    change: dict[int, ColdAddress] = {}
    total_out = 0
    for n, out in enumerate(outputs):
        total_out += _amount(out.amount_sat, f"output {n} amount")
        spk = bytes(out.script_pubkey)
        if not spk:
            raise ColdPsbtError(f"output {n} has an empty script")
        if out.cold_change_index is not None:
            if wallet is None:
                raise ColdPsbtError(f"output {n}: cold change needs the cold wallet")
            addr = wallet.derive(1, out.cold_change_index)
            if addr.script_pubkey != spk:
                raise ColdPsbtError(f"output {n}: the script is not cold change "
                                    f"1/{out.cold_change_index}")
            change[n] = addr
        if (len(out.derivations) == 1 and len(spk) == 22 and spk[:2] == b"\x00\x14"
                and p2wpkh(out.derivations[0].pubkey) != spk):
            raise ColdPsbtError(f"output {n}: the derivation's key does not pay to its "
                                "P2WPKH script")
        vout.append(TransactionOutput(out.amount_sat, Script(spk)))
    if total_out > total_in:
        raise ColdPsbtError(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")

    psbt = PSBT(Transaction(version=2, vin=vin, vout=vout, locktime=locktime), unknown={})
    for n, lead in enumerate(lead_inputs):
        scope = psbt.inputs[n]
        scope.unknown = dict(lead.fields)  # embit shares a mutable default between scopes
        scope.witness_utxo = TransactionOutput(lead.value_sat, Script(bytes(lead.script_pubkey)))
        _attach(scope, lead.derivations)
    for k, (utxo, addr) in enumerate(zip(inputs, addrs, strict=True)):
        scope = psbt.inputs[len(lead_inputs) + k]
        scope.unknown = {}
        scope.witness_utxo = TransactionOutput(utxo.value_sat, Script(addr.script_pubkey))
        if utxo.prev_tx is not None:
            scope.non_witness_utxo = _prev_tx(len(lead_inputs) + k, utxo, addr.script_pubkey)
        scope.witness_script = Script(addr.witness_script)
        _attach(scope, addr.keys)
    for n, (out, out_scope) in enumerate(zip(outputs, psbt.outputs, strict=True)):
        out_scope.unknown = {}
        if n in change:
            out_scope.witness_script = Script(change[n].witness_script)
            _attach(out_scope, change[n].keys)
        _attach(out_scope, out.derivations)
    return str(psbt.to_base64())


# ------------------------------------------------------------------------------ reading

def read_psbt(text: str | bytes, name: str = "the PSBT") -> PSBT:
    """A PSBT from base64 text, hex text or the binary form (what wallets save)."""
    raw: bytes
    if isinstance(text, bytes) and text.startswith(b"psbt\xff"):
        raw = text
    else:
        s = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        s = "".join(s.split())
        try:
            raw = bytes.fromhex(s) if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", s) \
                else base64.b64decode(s, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ColdPsbtError(f"{name} is neither base64 nor hex") from exc
    if not raw.startswith(b"psbt\xff"):
        raise ColdPsbtError(f"{name} is not a PSBT (no psbt magic)")
    try:
        return PSBT.parse(raw)
    except Exception as exc:  # embit raises assorted errors on malformed input
        raise ColdPsbtError(f"{name} is not a readable PSBT: {exc}") from exc


def read_psbt_file(path: Path) -> PSBT:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ColdPsbtError(f"cannot read {path}: {exc.strerror}") from exc
    return read_psbt(data, str(path))


def unsigned_txid(psbt: PSBT) -> str:
    return bytes(psbt.tx.txid()).hex()


def inputs_without_prev_tx(psbt: PSBT | str) -> list[int]:
    """The inputs that carry no previous transaction (``non_witness_utxo``): a PSBT stored
    before satvault put them on every cold input, which the cosigners now refuse."""
    return [n for n, scope in enumerate(_as_psbt(psbt).inputs) if scope.non_witness_utxo is None]


def _as_psbt(value: PSBT | str, name: str = "the PSBT") -> PSBT:
    return value if isinstance(value, PSBT) else read_psbt(value, name)


# ------------------------------------------------------------------------------ combining

def combine(psbts: Sequence[PSBT | str], names: Sequence[str] | None = None) -> PSBT:
    """BIP174 combiner: one PSBT with every partial signature and field of ``psbts``.

    All must describe the same unsigned transaction; the first one that does not is named
    in the :class:`PsbtMismatch`. A field both sides have keeps the first one's value (a
    signature is verified later, by :func:`finalize`, against the descriptor)."""
    if not psbts:
        raise ColdPsbtError("nothing to combine")
    labels = list(names) if names is not None else [f"PSBT {k + 1}" for k in range(len(psbts))]
    if len(labels) != len(psbts):
        raise ColdPsbtError("one name per PSBT")
    parsed = [_as_psbt(p, label) for p, label in zip(psbts, labels, strict=True)]
    base = read_psbt(parsed[0].to_base64(), labels[0])  # a copy: the caller's stays as is
    base_tx = base.tx.serialize()
    for other, label in zip(parsed[1:], labels[1:], strict=True):
        if other.tx.serialize() != base_tx:
            raise PsbtMismatch(f"{label} is for transaction {unsigned_txid(other)}, not "
                               f"{unsigned_txid(base)} of {labels[0]}: it is another "
                               "transaction (or an altered copy) and was not combined")
        for mine, theirs in zip(base.inputs, other.inputs, strict=True):
            for pub, sig in theirs.partial_sigs.items():
                mine.partial_sigs.setdefault(pub, sig)
            for pub, der in theirs.bip32_derivations.items():
                mine.bip32_derivations.setdefault(pub, der)
            for key, value in theirs.unknown.items():
                mine.unknown.setdefault(key, value)
            mine.witness_utxo = mine.witness_utxo or theirs.witness_utxo
            mine.non_witness_utxo = mine.non_witness_utxo or theirs.non_witness_utxo
            mine.witness_script = mine.witness_script or theirs.witness_script
            mine.final_scriptwitness = mine.final_scriptwitness or theirs.final_scriptwitness
            mine.final_scriptsig = mine.final_scriptsig or theirs.final_scriptsig
        for mine_o, theirs_o in zip(base.outputs, other.outputs, strict=True):
            for pub, der in theirs_o.bip32_derivations.items():
                mine_o.bip32_derivations.setdefault(pub, der)
            mine_o.witness_script = mine_o.witness_script or theirs_o.witness_script
    return base


# ------------------------------------------------------------------------------ signatures

@dataclass(frozen=True, slots=True)
class InputSignatures:
    index: int
    cold: bool  # False: not an input of this cold wallet (e.g. a proof's other inputs)
    valid: int
    needed: int
    signers: tuple[str, ...]  # fingerprints (hex) of the cosigners who signed

    @property
    def complete(self) -> bool:
        return self.valid >= self.needed


def _cold_address(psbt: PSBT, i: int, wallet: ColdWallet) -> ColdAddress | None:
    """The cold address input ``i`` spends, checked against its PSBT fields; None if the
    input names no cosigner of ``wallet``."""
    scope = psbt.inputs[i]
    where = f"input {i}"
    ders = [(bytes(d.fingerprint), tuple(d.derivation)) for d in scope.bip32_derivations.values()]
    located = wallet.locate(ders)
    if located is None:
        return None
    addr = wallet.derive(*located)
    if scope.witness_utxo is None:
        raise ColdPsbtError(f"{where} has no witness_utxo (amount and script of the coin)")
    if bytes(scope.witness_utxo.script_pubkey.data) != addr.script_pubkey:
        raise ColdPsbtError(f"{where}: its coin is not paid to cold {located[0]}/{located[1]} "
                            "(the derived P2WSH script differs)")
    if scope.witness_script is not None and bytes(scope.witness_script.data) != \
            addr.witness_script:
        raise ColdPsbtError(f"{where}: its witness script is not the cold wallet's at "
                            f"{located[0]}/{located[1]}")
    if scope.sighash_type not in (None, SIGHASH.ALL):
        raise ColdPsbtError(f"{where} asks for sighash {scope.sighash_type}; only ALL is used")
    return addr


def _valid_signatures(psbt: PSBT, i: int, addr: ColdAddress, tx: Transaction
                      ) -> dict[bytes, bytes]:
    """``{pubkey: signature}`` of input ``i``; a signature that does not verify, or from a
    key that is not one of the input's cosigners, raises :class:`BadSignature`."""
    scope = psbt.inputs[i]
    value = int(scope.witness_utxo.value)
    by_pub = {k.pubkey: k for k in addr.keys}
    found: dict[bytes, bytes] = {}
    candidates = [(bytes(pub.sec()), bytes(sig)) for pub, sig in scope.partial_sigs.items()]
    if scope.final_scriptwitness:  # finalized elsewhere (another coordinator, a wallet)
        items = [bytes(x) for x in scope.final_scriptwitness.items]
        if len(items) < 2 or items[0] != b"" or items[-1] != addr.witness_script:
            raise BadSignature(f"input {i}: its final witness is not [empty, signatures…, "
                               "the cold witness script]")
        for sig in items[1:-1]:
            signer = next((k.pubkey for k in addr.keys
                           if k.pubkey not in found and verify_ecdsa(
                               tx, i, addr.witness_script, value, k.pubkey, sig) is None), None)
            if signer is None:
                raise BadSignature(f"input {i}: a signature in its final witness verifies "
                                   "for none of its cosigners' keys")
            found[signer] = sig
    for pub, sig in candidates:
        key = by_pub.get(pub)
        if key is None:
            raise BadSignature(f"input {i}: a partial signature from key {pub.hex()}, which is "
                               "not one of this input's cosigners")
        problem = verify_ecdsa(tx, i, addr.witness_script, value, pub, sig)
        if problem is not None:
            raise BadSignature(f"input {i}: the signature of cosigner {key.describe()} (key "
                               f"{pub.hex()}) is refused: {problem}")
        found[pub] = sig
    return found


def signature_count(psbt: PSBT | str, wallet: ColdWallet) -> list[InputSignatures]:
    """Per input: how many valid cosigner signatures it has and how many it needs."""
    p = _as_psbt(psbt)
    tx = p.tx
    out = []
    for i in range(len(p.inputs)):
        addr = _cold_address(p, i, wallet)
        if addr is None:
            out.append(InputSignatures(i, False, 0, 0, ()))
            continue
        sigs = _valid_signatures(p, i, addr, tx)
        fps = tuple(k.fingerprint.hex() for k in addr.keys if k.pubkey in sigs)
        out.append(InputSignatures(i, True, len(sigs), wallet.threshold, fps))
    return out


def finalize_cold_inputs(psbt: PSBT, wallet: ColdWallet, indexes: Iterable[int]) -> None:
    """Give each listed cold input its final witness, in place (BIP174 finalizer: partial
    signatures, derivations and the witness script give way to the final witness). Raises
    :class:`NotEnoughSignatures` naming every input short of m, having changed nothing."""
    tx = psbt.tx
    ready: list[tuple[int, Witness]] = []
    short: list[str] = []
    for i in indexes:
        addr = _cold_address(psbt, i, wallet)
        if addr is None:
            raise ColdPsbtError(f"input {i} is not an input of the cold wallet")
        sigs = _valid_signatures(psbt, i, addr, tx)
        if len(sigs) < wallet.threshold:
            who = ", ".join(k.fingerprint.hex() for k in addr.keys if k.pubkey in sigs)
            short.append(f"input {i}: {len(sigs)} of {wallet.threshold} signatures"
                         + (f" (from {who})" if who else ""))
            continue
        ordered = [sigs[k.pubkey] for k in addr.keys if k.pubkey in sigs][:wallet.threshold]
        ready.append((i, Witness([b"", *ordered, addr.witness_script])))
    if short:
        raise NotEnoughSignatures("not enough cosigner signatures: " + "; ".join(short))
    for i, witness in ready:
        scope = psbt.inputs[i]
        scope.final_scriptwitness = witness
        scope.partial_sigs.clear()
        scope.bip32_derivations.clear()
        scope.witness_script = None
        scope.sighash_type = None


class FinalTx(NamedTuple):
    raw_hex: str
    txid: str
    psbt_b64: str  # the finalized PSBT


def extract(psbt: PSBT) -> Transaction:
    """The network transaction of a PSBT whose inputs all carry their final fields."""
    tx = psbt.tx
    for i, scope in enumerate(psbt.inputs):
        if scope.final_scriptwitness is not None:
            tx.vin[i].witness = scope.final_scriptwitness
        if scope.final_scriptsig is not None:
            tx.vin[i].script_sig = scope.final_scriptsig
    return tx


def finalize(psbt: PSBT | str, wallet: ColdWallet) -> FinalTx:
    """The signed transaction, once every input (all of them cold) has m valid signatures."""
    p = read_psbt(_as_psbt(psbt).to_base64())  # work on a copy
    finalize_cold_inputs(p, wallet, range(len(p.inputs)))
    tx = extract(p)
    return FinalTx(tx.serialize().hex(), bytes(tx.txid()).hex(), str(p.to_base64()))


# ------------------------------------------------------------------------------ checking

def check_outputs(psbt: PSBT | str,
                  expected: Transaction | PSBT | str | Sequence[tuple[bytes, int]]) -> None:
    """Raise :class:`PsbtMismatch` unless ``psbt`` is the transaction the platform asked for.

    ``expected``: the stored unsigned transaction (a ``Transaction``, its PSBT, or either as
    text), compared by unsigned txid and output by output; or a list of
    ``(script_pubkey, amount_sat)``, compared output by output."""
    p = _as_psbt(psbt)
    got = [(bytes(o.script_pubkey.data), int(o.value)) for o in p.tx.vout]
    want_tx: Transaction | None = None
    if isinstance(expected, Transaction):
        want_tx = expected
    elif isinstance(expected, PSBT):
        want_tx = expected.tx
    elif isinstance(expected, str):
        text = expected.strip()
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text) and not text.startswith("70736274ff"):
            try:
                want_tx = Transaction.parse(bytes.fromhex(text))
            except Exception as exc:  # embit raises assorted errors on malformed input
                raise ColdPsbtError(f"the expected transaction is not readable: {exc}") from exc
        else:
            want_tx = read_psbt(text, "the expected PSBT").tx
    if want_tx is not None:
        want = [(bytes(o.script_pubkey.data), int(o.value)) for o in want_tx.vout]
    else:
        pairs = cast(Sequence[tuple[bytes, int]], expected)
        want = [(bytes(script), int(amount)) for script, amount in pairs]
    for n in range(max(len(got), len(want))):
        g = got[n] if n < len(got) else None
        w = want[n] if n < len(want) else None
        if g != w:
            if g is None:
                assert w is not None
                raise PsbtMismatch(f"output {n} is missing (expected {w[1]} sat to "
                                   f"script {w[0].hex()})")
            if w is None:
                raise PsbtMismatch(f"output {n} ({g[1]} sat to script {g[0].hex()}) was not "
                                   "asked for")
            raise PsbtMismatch(f"output {n} pays {g[1]} sat to script {g[0].hex()}; the "
                               f"platform asked for {w[1]} sat to script {w[0].hex()}")
    if want_tx is not None and bytes(want_tx.txid()) != bytes(p.tx.txid()):
        raise PsbtMismatch(f"the unsigned transaction is {unsigned_txid(p)}, not the stored "
                           f"{bytes(want_tx.txid()).hex()} (inputs, version, locktime or "
                           "sequence differ)")


# ------------------------------------------------------------------------------ QR export

def export_files(psbt_b64: str, out: Path, *, stem: str | None = None) -> list[Path]:
    """Write ``<stem>.psbt`` (base64 text) and its QR image(s) into the directory ``out``.

    One ``<stem>.png`` when the base64 text has at most :data:`QR_SINGLE_MAX_CHARS`
    characters; otherwise a structured-append sequence ``<stem>-qr-01-of-NN.png`` … (see
    the module docstring). Returns the paths written, the ``.psbt`` file first."""
    import segno  # here, not at the top: segno's writers pull in urllib (and socket), which
    # the offline cosigner tool, importing this module, must not load

    text = "".join(psbt_b64.split())
    psbt = read_psbt(text)
    stem = stem or f"cold-{unsigned_txid(psbt)[:16]}"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", stem):
        raise QrExportError(f"file stem {stem!r} may hold only letters, digits, . _ -")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    psbt_file = out / f"{stem}.psbt"
    psbt_file.write_text(text + "\n")
    written = [psbt_file]
    if len(text) <= QR_SINGLE_MAX_CHARS:
        qr = segno.make(text, error="L", boost_error=False, mode="byte")
        png = out / f"{stem}.png"
        qr.save(str(png), scale=4, border=4)
        return [*written, png]
    parts = math.ceil(len(text) / QR_PART_CHARS)
    if parts > QR_MAX_PARTS:
        raise QrExportError(f"the PSBT is {len(text)} characters: more than {QR_MAX_PARTS} QR "
                            f"codes of {QR_PART_CHARS}; carry the .psbt file instead "
                            f"({psbt_file})")
    seq = segno.make_sequence(text, error="L", boost_error=False, mode="byte",
                              symbol_count=parts)
    for k, qr in enumerate(seq):
        png = out / f"{stem}-qr-{k + 1:02d}-of-{len(seq):02d}.png"
        qr.save(str(png), scale=4, border=4)
        written.append(png)
    return written
