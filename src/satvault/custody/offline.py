"""The reference offline cosigner: sign a cold PSBT on a machine that never goes online.

A cosigner's key is a BIP39 mnemonic in a text file (``satvault cold keygen`` writes one),
with an optional BIP39 passphrase from ``SATVAULT_COLD_PASSPHRASE``. Its multisig account
is BIP48's ``m/48'/c'/0'/2'`` (P2WSH; ``c`` = 0 on mainnet, 1 on test networks), whose
xpub and origin go into the cold descriptor.

:func:`sign_cold` adds this cosigner's partial signature to every input that names its
master fingerprint, after checking, on its own, that the PSBT is what it looks like:

* every input carries ``witness_utxo`` and ``witness_script``; the script is a
  ``sortedmulti`` (keys in ascending order) of exactly the keys the input's BIP32
  derivations name, and pays to the ``witness_utxo`` script; this cosigner's key, derived
  from the seed at the named path (``48'/c'/a'/2'/chain/index``), is one of them;
* all inputs belong to one multisig wallet (same m, same cosigners' accounts);
* an output claiming to be change (it names this cosigner) is a script of the same
  threshold and cosigners' accounts. Given the cold wallet's descriptor (``--descriptor``,
  the one every cosigner recorded at the ceremony), it is proven to be the wallet's own
  script: derived from every cosigner's xpub at its path, and every input's script too.
  Without it the other cosigners' keys cannot be checked (a coordinator could swap them for
  its own, keeping their fingerprints and paths), so it is shown as *unverified* change.
  Every other output is shown as a payment, with the key origin it names if any (a refill
  to the hot wallet names the hot signer's key: not verifiable offline);
* every input carries its ``non_witness_utxo``, the whole previous transaction, whose txid
  is the outpoint's and whose output there is the ``witness_utxo`` (amount and script): the
  amounts, and the fee shown, are the chain's (:mod:`satvault.onchain.prevout`, the hot
  signer's own check). Without it a coordinator could lie about the amounts over two
  signing rounds, each showing a small fee, and combine the signatures into one valid
  transaction paying a large one (the segwit fee attack, CVE-2020-14199);
* only ``SIGHASH_ALL``; the fee is not negative.

A BIP127 proof of reserves (input 0 carries ``PSBT_IN_POR_COMMITMENT``) is accepted too:
its commitment input must match the message, it must have one output worth exactly the
other inputs, and it may hold hot-wallet P2WPKH inputs this cosigner leaves to the hot
signer. The summary then says that nothing is spent and shows the message. Its inputs need
no previous transaction (a proof can never be mined, so no signature in it can pay a fee);
one that is given is checked all the same.

Anything else is refused with :class:`~satvault.custody.errors.SigningRefused`, naming
the input or output.

Imports: embit, segno (through :mod:`satvault.custody.cold`) and the pure on-chain helpers.
Nothing that opens a socket (no httpx, no chain backend, no signer client): a test imports
it in a fresh interpreter and checks. ``python -m satvault.custody.offline sign …`` runs it
without the rest of satvault's command line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embit import bip32, bip39, ec
from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.script import Script
from embit.transaction import SIGHASH

from satvault.custody.cold import (
    HARDENED,
    ColdWallet,
    format_path,
    p2wsh,
    parse_multisig,
    read_psbt,
)
from satvault.custody.errors import ColdPsbtError, ColdWalletError, SigningRefused
from satvault.onchain.addresses import script_to_address
from satvault.onchain.bip127 import PSBT_IN_POR_COMMITMENT, commitment_outpoint
from satvault.onchain.errors import OnchainError, UnprovenAmount
from satvault.onchain.prevout import proven_amount

__all__ = [
    "PASSPHRASE_ENV",
    "ColdSignature",
    "account_path",
    "build_descriptor",
    "cosigner_key",
    "descriptor_arg",
    "load_seed_file",
    "main",
    "new_seed_file",
    "root_from_mnemonic",
    "sign_cold",
]

PASSPHRASE_ENV = "SATVAULT_COLD_PASSPHRASE"
_NETWORKS = ("mainnet", "testnet", "signet", "regtest")
_P2WSH_SCRIPT_TYPE = 2  # BIP48 script type 2': native segwit multisig


def _coin(network: str) -> int:
    if network not in _NETWORKS:
        raise SigningRefused(f"unknown network {network!r}")
    return 0 if network == "mainnet" else 1


def _versions(network: str) -> dict[str, bytes]:
    versions: dict[str, bytes] = EMBIT_NETWORKS["main" if _coin(network) == 0 else "test"]
    return versions


def account_path(network: str, account: int = 0) -> tuple[int, ...]:
    """BIP48 ``48'/c'/account'/2'``."""
    return (48 + HARDENED, _coin(network) + HARDENED, account + HARDENED,
            _P2WSH_SCRIPT_TYPE + HARDENED)


# ------------------------------------------------------------------------------ seeds

def root_from_mnemonic(mnemonic: str, network: str, passphrase: str = "") -> bip32.HDKey:
    words = " ".join(mnemonic.split())
    if not bip39.mnemonic_is_valid(words):
        raise SigningRefused("the seed file does not hold a valid BIP39 mnemonic (wrong word "
                             "or checksum)")
    return bip32.HDKey.from_seed(bip39.mnemonic_to_seed(words, passphrase),
                                 version=_versions(network)["xprv"])


def load_seed_file(path: Path, network: str, passphrase: str | None = None) -> bip32.HDKey:
    """The root key of the mnemonic in ``path``; the BIP39 passphrase is ``passphrase`` or
    ``$SATVAULT_COLD_PASSPHRASE`` (empty if neither)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SigningRefused(f"cannot read the seed file {path}: {exc.strerror}") from exc
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV, "")
    return root_from_mnemonic(text, network, passphrase)


def new_seed_file(path: Path, *, words: int = 24) -> str:
    """Write a fresh mnemonic to ``path`` (mode 0600; an existing file is never replaced) and
    return it."""
    strength = {12: 16, 24: 32}.get(words)
    if strength is None:
        raise SigningRefused("a mnemonic has 12 or 24 words")
    mnemonic = str(bip39.mnemonic_from_bytes(secrets.token_bytes(strength)))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SigningRefused(f"{path} exists; refusing to overwrite a seed") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(mnemonic + "\n")
    return mnemonic


def cosigner_key(root: bip32.HDKey, network: str, account: int = 0) -> str:
    """``[fingerprint/48h/c'/a'/2h]xpub…``: the line a cosigner gives the coordinator."""
    path = account_path(network, account)
    xpub = root.derive(list(path)).to_public().to_base58(version=_versions(network)["xpub"])
    return f"[{root.my_fingerprint.hex()}/{format_path(path, prefix='')}]{xpub}"


def build_descriptor(m: int, keys: Sequence[str], network: str) -> str:
    """``wsh(sortedmulti(m, KEY/<0;1>/*, …))#checksum`` from cosigner key lines, checked."""
    from embit.descriptor.checksum import add_checksum

    if not keys:
        raise ColdWalletError("give the cosigners' keys ([fingerprint/path]xpub)")
    parts = []
    for k in keys:
        k = k.strip()
        parts.append(k if k.endswith("/*") else f"{k}/<0;1>/*")
    text = str(add_checksum(f"wsh(sortedmulti({m},{','.join(parts)}))"))
    return ColdWallet.from_descriptor(text, network).descriptor


# ------------------------------------------------------------------------------ review

@dataclass
class _Wallet:
    m: int
    accounts: frozenset[tuple[bytes, tuple[int, ...]]]


@dataclass
class ColdSignature:
    psbt_b64: str
    summary: str
    signed_inputs: tuple[int, ...]
    proof_message: str | None = None
    fee_sat: int | None = None
    outputs: list[dict[str, object]] = field(default_factory=list)


def _describe(spk: bytes, network: str) -> str:
    try:
        return script_to_address(spk, network)
    except OnchainError:
        return f"script {spk.hex()}"


def _multisig_of(scope: object, where: str, spk: bytes) -> tuple[int, list[bytes], bytes]:
    ws_obj = getattr(scope, "witness_script", None)
    if ws_obj is None:
        raise SigningRefused(f"{where} has no witness_script: a cold input names its "
                             "multisig script")
    ws = bytes(ws_obj.data)
    if p2wsh(ws) != spk:
        raise SigningRefused(f"{where}: the witness_script does not hash to its P2WSH script")
    parsed = parse_multisig(ws)
    if parsed is None:
        raise SigningRefused(f"{where}: the witness_script is not an m-of-n multisig")
    m, keys = parsed
    if keys != sorted(keys):
        raise SigningRefused(f"{where}: the witness_script's keys are not sorted: not a "
                             "sortedmulti")
    return m, keys, ws


def _account_of(path: tuple[int, ...], network: str, where: str) -> tuple[int, ...]:
    coin = _coin(network)
    if (len(path) != 6 or path[0] != 48 + HARDENED or path[1] != coin + HARDENED
            or path[2] < HARDENED or path[3] != _P2WSH_SCRIPT_TYPE + HARDENED
            or path[4] not in (0, 1) or path[5] >= HARDENED):
        raise SigningRefused(f"{where}: this cosigner's path {format_path(path)} is not a "
                             f"BIP48 P2WSH path m/48h/{coin}h/a'/2h/chain/index on {network}")
    return path[:4]


def _cosigners(scope: object, keys: list[bytes], where: str
               ) -> dict[bytes, tuple[bytes, tuple[int, ...]]]:
    ders = {bytes(pub.sec()): (bytes(d.fingerprint), tuple(d.derivation))
            for pub, d in scope.bip32_derivations.items()}  # type: ignore[attr-defined]
    if set(ders) != set(keys) or len(ders) != len(keys):
        raise SigningRefused(f"{where}: its BIP32 derivations do not name exactly the "
                             "witness script's keys")
    return ders


def _check_mine(root: bip32.HDKey, ders: dict[bytes, tuple[bytes, tuple[int, ...]]],
                network: str, where: str) -> tuple[bytes, tuple[int, ...]]:
    mine = [(pub, path) for pub, (fp, path) in ders.items() if fp == root.my_fingerprint]
    if len(mine) != 1:
        raise SigningRefused(f"{where} names this cosigner ({root.my_fingerprint.hex()}) "
                             f"{len(mine)} times; a multisig input has one key per cosigner")
    pub, path = mine[0]
    _account_of(path, network, where)
    if bytes(root.derive(list(path)).get_public_key().sec()) != pub:
        raise SigningRefused(f"{where}: the key at {format_path(path)} of this seed is not "
                             "the one the PSBT names")
    return pub, path


def _wallet_of(m: int, ders: dict[bytes, tuple[bytes, tuple[int, ...]]]) -> _Wallet:
    return _Wallet(m, frozenset((fp, path[:-2]) for fp, path in ders.values()))


def _proven(cold: ColdWallet, ders: dict[bytes, tuple[bytes, tuple[int, ...]]],
            script: bytes, where: str) -> None:
    """``script`` is the cold wallet's own at the path its derivations name, every key derived
    from the descriptor's xpubs (found from outside: without this a coordinator could swap
    the other cosigners' keys in a change output and it still read as verified change)."""
    at = cold.locate(ders.values())
    try:
        own = cold.derive(*at).witness_script if at is not None else None
    except ColdWalletError:
        own = None
    if own != script:
        raise SigningRefused(f"{where} is not a script of the cold wallet's descriptor "
                             "(its keys are not the cosigners' keys at its path)")


def sign_cold(psbt_b64: str | bytes, root: bip32.HDKey, network: str,
              descriptor: str | None = None) -> ColdSignature:
    """Check ``psbt_b64`` and add this cosigner's signatures; see the module docstring.
    ``descriptor``: the cold wallet's, to prove its inputs and change are its own."""
    try:
        cold = ColdWallet.from_descriptor(descriptor, network) if descriptor else None
    except ColdWalletError as exc:
        raise SigningRefused(f"the descriptor given is not a cold wallet's: {exc}") from exc
    try:
        psbt = read_psbt(psbt_b64)
    except ColdPsbtError as exc:
        raise SigningRefused(str(exc)) from exc
    fp = root.my_fingerprint
    tx = psbt.tx
    if not psbt.inputs or not psbt.outputs:
        raise SigningRefused("the PSBT has no inputs or no outputs")

    proof_message: str | None = None
    commit = psbt.inputs[0].unknown.get(PSBT_IN_POR_COMMITMENT)
    if commit is not None:
        try:
            proof_message = bytes(commit).decode("utf-8")
            digest, vout = commitment_outpoint(proof_message)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SigningRefused(f"input 0: an unreadable proof-of-reserves message: {exc}"
                                 ) from exc
        if bytes(tx.vin[0].txid)[::-1] != digest or tx.vin[0].vout != vout:
            raise SigningRefused("input 0 carries a proof-of-reserves message, but its "
                                 "outpoint is not the BIP127 commitment to that message")
    for i in range(1, len(psbt.inputs)):
        if PSBT_IN_POR_COMMITMENT in psbt.inputs[i].unknown:
            raise SigningRefused(f"input {i} carries a proof-of-reserves message; only "
                                 "input 0 may")

    lines: list[str] = []
    wallet: _Wallet | None = None
    to_sign: list[tuple[int, bytes, tuple[int, ...], bytes, int]] = []
    total_in = 0
    hot_inputs = 0
    seen: set[tuple[bytes, int]] = set()
    for i, scope in enumerate(psbt.inputs):
        outpoint = (bytes(tx.vin[i].txid), tx.vin[i].vout)
        if outpoint in seen:
            raise SigningRefused(f"input {i} spends an outpoint a second time")
        seen.add(outpoint)
        if i == 0 and proof_message is not None:
            continue
        where = f"input {i} ({bytes(tx.vin[i].txid).hex()}:{tx.vin[i].vout})"
        if scope.witness_utxo is None:
            raise SigningRefused(f"{where} has no witness_utxo (the coin's amount and script)")
        if scope.sighash_type not in (None, SIGHASH.ALL):
            raise SigningRefused(f"{where} asks for sighash {scope.sighash_type}; only ALL is "
                                 "signed")
        spk = bytes(scope.witness_utxo.script_pubkey.data)
        value = int(scope.witness_utxo.value)
        # The amount and the fee shown come from the previous transaction, checked against
        # the outpoint (the segwit fee attack; the hot signer's very check). A proof of
        # reserves can never be mined (its input 0 spends no coin), so there it is checked
        # only when given.
        if proof_message is None or scope.non_witness_utxo is not None:
            try:
                value = proven_amount(scope, where)
            except UnprovenAmount as exc:
                raise SigningRefused(str(exc)) from exc
        if value <= 0:
            raise SigningRefused(f"{where} claims a value of {value} sat")
        total_in += value
        if proof_message is not None and len(spk) == 22 and spk[:2] == b"\x00\x14":
            if any(d.fingerprint == fp for d in scope.bip32_derivations.values()):
                raise SigningRefused(f"{where} is a single-key input naming this cosigner")
            hot_inputs += 1  # the hot signer's coin: it signs it, not us
            continue
        m, keys, ws = _multisig_of(scope, where, spk)
        ders = _cosigners(scope, keys, where)
        this = _wallet_of(m, ders)
        if wallet is None:
            wallet = this
        elif this != wallet:
            raise SigningRefused(f"{where} belongs to another multisig wallet than input "
                                 "0's (other threshold or cosigners)")
        if not any(f == fp for f, _ in ders.values()):
            raise SigningRefused(f"{where} does not include this cosigner "
                                 f"({fp.hex()}): it is not this cold wallet's coin")
        pub, path = _check_mine(root, ders, network, where)
        if cold is not None:
            _proven(cold, ders, ws, where)
        to_sign.append((i, pub, path, ws, value))
    if not to_sign:
        raise SigningRefused(f"nothing to sign: no input names this cosigner ({fp.hex()})")
    assert wallet is not None

    total_out = 0
    outputs: list[dict[str, object]] = []
    for n, (vout, oscope) in enumerate(zip(tx.vout, psbt.outputs, strict=True)):
        spk = bytes(vout.script_pubkey.data)
        amount = int(vout.value)
        total_out += amount
        to = _describe(spk, network)
        ders = {bytes(pub.sec()): (bytes(d.fingerprint), tuple(d.derivation))
                for pub, d in oscope.bip32_derivations.items()}
        kind = "payment"
        note = ""
        if any(f == fp for f, _ in ders.values()):
            where = f"output {n} ({amount} sat to {to})"
            m, keys, ows = _multisig_of(oscope, where, spk)
            oders = _cosigners(oscope, keys, where)
            _check_mine(root, oders, network, where)
            if _wallet_of(m, oders) != wallet:
                raise SigningRefused(f"{where} claims to be change but is a script of another "
                                     "multisig wallet")
            if cold is not None:
                _proven(cold, oders, ows, where)
                kind, note = "cold change", "change back to the cold wallet (verified against " \
                                            "the descriptor)"
            else:
                kind, note = "cold change (unverified)", "claims to be change to the cold " \
                    "wallet; the other cosigners' keys are NOT checked (give --descriptor)"
        elif ders:
            origins = ", ".join(f"{f.hex()}/{format_path(p, prefix='')}"
                                for f, p in ders.values())
            kind, note = "known key", f"to key {origins} (named by the coordinator; not " \
                                      "verifiable offline)"
        outputs.append({"n": n, "to": to, "amount_sat": amount, "kind": kind})
        lines.append(f"  output {n}: {amount:>15,} sat -> {to}" + (f"  [{note}]" if note
                                                                   else ""))
    fee = total_in - total_out
    if proof_message is not None:
        if len(tx.vout) != 1:
            raise SigningRefused(f"a proof of reserves has exactly one output, not "
                                 f"{len(tx.vout)}")
        if fee != 0:
            raise SigningRefused(f"a proof of reserves pays no fee; this one's output differs "
                                 f"from its inputs by {fee} sat")
        head = ["PROOF OF RESERVES (BIP127): nothing is spent; this transaction can never be "
                "mined (input 0 spends no coin).",
                f"  message: {proof_message!r}",
                f"  inputs: {len(psbt.inputs) - 1} coins, {total_in:,} sat "
                f"({len(to_sign)} cold, signed here; {hot_inputs} hot, signed by the hot "
                "signer)"]
    else:
        if fee < 0:
            raise SigningRefused(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")
        head = [f"COLD WALLET SPEND ({wallet.m}-of-{len(wallet.accounts)}), signed by "
                f"cosigner {fp.hex()}",
                f"  inputs: {len(to_sign)} coins, {total_in:,} sat"]
    summary_lines = [*head, *lines]
    if proof_message is None:
        summary_lines.append(f"  fee: {fee:,} sat")

    for i, pub, path, ws, value in to_sign:
        key = root.derive(list(path)).key
        digest = tx.sighash_segwit(i, Script(ws), value, sighash=SIGHASH.ALL)
        sig = key.sign(digest)
        psbt.inputs[i].partial_sigs[ec.PublicKey.parse(pub)] = sig.serialize() + \
            bytes([SIGHASH.ALL])
    summary_lines.append(f"  signed inputs: {', '.join(str(t[0]) for t in to_sign)}")
    return ColdSignature(str(psbt.to_base64()), "\n".join(summary_lines),
                         tuple(t[0] for t in to_sign), proof_message,
                         None if proof_message is not None else fee, outputs)


def descriptor_arg(text: str | None) -> str | None:
    """A ``--descriptor`` option's value: the descriptor itself, or ``@FILE`` holding it."""
    if not text or not text.startswith("@"):
        return text
    return _parse_psbt_arg(Path(text[1:])).decode().strip()


def _parse_psbt_arg(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SigningRefused(f"cannot read {path}: {exc.strerror}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m satvault.custody.offline sign FILE --seed-file SEED --network N [--out F]``"""
    parser = argparse.ArgumentParser(prog="python -m satvault.custody.offline")
    sub = parser.add_subparsers(dest="command", required=True)
    sign = sub.add_parser("sign", help="add this cosigner's signatures to a cold PSBT")
    sign.add_argument("file", type=Path)
    sign.add_argument("--seed-file", type=Path, required=True)
    sign.add_argument("--network", default="mainnet", choices=_NETWORKS)
    sign.add_argument("--out", type=Path)
    sign.add_argument("--descriptor", help="the cold wallet's descriptor (or @FILE): proves "
                      "the inputs and the change are the wallet's own")
    args = parser.parse_args(argv)
    try:
        root = load_seed_file(args.seed_file, args.network)
        result = sign_cold(_parse_psbt_arg(args.file), root, args.network,
                           descriptor_arg(args.descriptor))
    except (SigningRefused, ColdPsbtError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    out = args.out or args.file.with_name(f"{args.file.stem}-{root.my_fingerprint.hex()}.psbt")
    out.write_text(result.psbt_b64 + "\n")
    sys.stderr.write(result.summary + "\n")
    print(json.dumps({"ok": True, "out": str(out), "signed_inputs": list(result.signed_inputs),
                      "fingerprint": root.my_fingerprint.hex()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
