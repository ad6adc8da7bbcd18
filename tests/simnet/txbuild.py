"""Transactions built and signed in the tests themselves, with embit, independently of the
simnet's own faucet code: P2WPKH, P2TR key path and 2-of-3 P2WSH sortedmulti spends."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from embit import ec, script
from embit.networks import NETWORKS
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

REGTEST = NETWORKS["regtest"]


def key(n: int) -> Any:
    return ec.PrivateKey(hashlib.sha256(f"simnet test key {n}".encode()).digest())


@dataclass
class Wallet:
    """One spendable kind of output: its address and how to sign for it."""

    kind: str
    keys: list[Any]
    spk: Any
    witness_script: Any = None

    @property
    def address(self) -> str:
        return str(self.spk.address(REGTEST))


def p2wpkh(k: Any) -> Wallet:
    return Wallet("p2wpkh", [k], script.p2wpkh(k.get_public_key()))


def p2tr(k: Any) -> Wallet:
    return Wallet("p2tr", [k], script.p2tr(k.get_public_key()))


def p2pkh(k: Any) -> Wallet:
    return Wallet("p2pkh", [k], script.p2pkh(k.get_public_key()))


def p2sh_p2wpkh(k: Any) -> Wallet:
    redeem = script.p2wpkh(k.get_public_key())
    return Wallet("p2sh-p2wpkh", [k], script.p2sh(redeem), redeem)


def wsh_sortedmulti(m: int, keys: list[Any]) -> Wallet:
    pubs = sorted((k.get_public_key() for k in keys), key=lambda p: p.sec())
    ws = script.multisig(m, pubs)
    ordered = sorted(keys, key=lambda k: k.get_public_key().sec())
    return Wallet("p2wsh", ordered, script.p2wsh(ws), ws)


def unsigned(outpoint: tuple[str, int], outputs: list[tuple[Any, int]],
             sequence: int = 0xFFFFFFFD) -> Any:
    vin = [TransactionInput(bytes.fromhex(outpoint[0]), outpoint[1], sequence=sequence)]
    vout = [TransactionOutput(value, spk) for spk, value in outputs]
    return Transaction(version=2, vin=vin, vout=vout, locktime=0)


def sign(tx: Any, wallet: Wallet, value: int, signers: list[Any] | None = None) -> Any:
    """Sign input 0, which spends ``value`` sat from ``wallet``."""
    tx.clear_cache()
    if wallet.kind in ("p2wpkh", "p2sh-p2wpkh"):
        k = wallet.keys[0]
        program = script.p2wpkh(k.get_public_key()).data[2:]
        code = Script(b"\x76\xa9\x14" + program + b"\x88\xac")
        msg = tx.sighash_segwit(0, code, value, SIGHASH.ALL)
        tx.vin[0].witness = Witness([k.sign(msg).serialize() + b"\x01", k.sec()])
        if wallet.kind == "p2sh-p2wpkh":
            redeem = wallet.witness_script.data
            tx.vin[0].script_sig = Script(bytes([len(redeem)]) + redeem)
    elif wallet.kind == "p2pkh":
        k = wallet.keys[0]
        msg = tx.sighash_legacy(0, wallet.spk, SIGHASH.ALL)
        tx.vin[0].script_sig = script.script_sig_p2pkh(k.sign(msg), k.get_public_key())
    elif wallet.kind == "p2tr":
        msg = tx.sighash_taproot(0, [wallet.spk], [value], SIGHASH.DEFAULT)
        sig = wallet.keys[0].taproot_tweak(b"").schnorr_sign(msg)
        tx.vin[0].witness = Witness([sig.serialize()])
    else:
        msg = tx.sighash_segwit(0, wallet.witness_script, value, SIGHASH.ALL)
        use = signers if signers is not None else wallet.keys[:2]
        sigs = [k.sign(msg).serialize() + b"\x01" for k in wallet.keys if k in use]
        tx.vin[0].witness = Witness([b"", *sigs, wallet.witness_script.data])
    return tx


def to_address(address: str) -> Any:
    return Script.from_address(address)
