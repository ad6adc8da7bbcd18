"""Fixed cosigners for the cold-wallet tests: BIP39 mnemonics from fixed entropy, their
BIP48 account keys, and 2-of-3 / 3-of-5 descriptors built from them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from embit import bip32, bip39
from embit.networks import NETWORKS
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.custody.cold import ColdInput, ColdWallet
from satvault.custody.offline import build_descriptor, cosigner_key, root_from_mnemonic

NETWORK = "regtest"


@dataclass(frozen=True)
class Cosigner:
    name: str
    mnemonic: str
    root: bip32.HDKey

    @property
    def key_line(self) -> str:
        return cosigner_key(self.root, NETWORK)

    @property
    def account_tprv(self) -> str:
        acc = self.root.derive("m/48h/1h/0h/2h")
        return str(acc.to_base58(version=NETWORKS["test"]["xprv"]))

    def seed_file(self, directory: Path) -> Path:
        path = directory / f"{self.name}.seed"
        if not path.exists():
            path.write_text(self.mnemonic + "\n")
        return path


def make_cosigners(n: int) -> list[Cosigner]:
    out = []
    for k in range(n):
        words = str(bip39.mnemonic_from_bytes(bytes([0x10 + k]) * 16))
        out.append(Cosigner("abcde"[k], words, root_from_mnemonic(words, NETWORK)))
    return out


@pytest.fixture
def cosigners() -> list[Cosigner]:
    return make_cosigners(3)


@pytest.fixture
def cold_wallet(cosigners: list[Cosigner]) -> ColdWallet:
    return ColdWallet.from_descriptor(
        build_descriptor(2, [c.key_line for c in cosigners], NETWORK), NETWORK)


def cold_descriptor(m: int = 2, n: int = 3) -> str:
    """The m-of-n cold wallet's descriptor, as an operator pastes it into the settings."""
    return build_descriptor(m, [c.key_line for c in make_cosigners(n)], NETWORK)


def cold_coin(wallet: ColdWallet, index: int, value: int, *, vout: int = 0, chain: int = 0,
              salt: bytes = b"") -> ColdInput:
    """A cold coin that was never on a chain: paid at output ``vout`` of a made-up previous
    transaction (strangers before it) spending a made-up coin named by ``salt``, which the
    coin carries as its ``prev_tx``."""
    spk = wallet.derive(chain, index).script_pubkey
    outs = [TransactionOutput(1_000 + k, Script(b"\x00\x14" + bytes(20))) for k in range(vout)]
    outs.append(TransactionOutput(value, Script(spk)))
    prev = Transaction(version=2, vin=[TransactionInput(
        hashlib.sha256(salt + bytes([chain, index & 0xFF, vout])).digest(), 0)], vout=outs)
    return ColdInput(bytes(prev.txid()).hex(), vout, value, chain, index, spk, prev.serialize())
