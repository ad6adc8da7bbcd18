"""Signer fixtures: a fixed seed, a HotSigner with an audit log, and a payout builder that
uses only what the web side has (the descriptors) to make PSBTs from fake UTXOs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from embit import bip32, bip39, ec
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.onchain.descriptors import WatchOnlyWallet, parse_wallet
from satvault.signer import HotSigner
from satvault.signing import (
    Payment,
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)
from satvault.signing.paths import parse_path

NETWORK = "regtest"
ENTROPY = bytes(range(100, 132))
MNEMONIC = bip39.mnemonic_from_bytes(ENTROPY)
SEED = bip39.mnemonic_to_seed(MNEMONIC)

PAY_A = bytes.fromhex("0014") + bytes(range(20))  # someone else's P2WPKH
PAY_B = bytes.fromhex("0020") + bytes(range(32))  # someone else's P2WSH


def prev_tx(spk: bytes, value: int, vout: int = 0, *, salt: bytes = b"") -> Transaction:
    """A transaction paying ``value`` to ``spk`` at output ``vout`` (strangers before it),
    spending a made-up coin named by ``salt``: the previous transaction of a test coin."""
    outs = [TransactionOutput(1_000 + k, Script(PAY_A)) for k in range(vout)]
    outs.append(TransactionOutput(value, Script(spk)))
    return Transaction(version=2, vin=[TransactionInput(hashlib.sha256(salt).digest(), 0)],
                       vout=outs)


@dataclass
class Payout:
    """A payout as the web side would build it: inputs, outputs, the requested payments."""

    inputs: list[PsbtInput]
    outputs: list[PsbtOutput]
    payments: list[Payment]
    psbt: str


class Builder:
    def __init__(self, descriptors: dict[str, str]) -> None:
        self.descriptors = descriptors
        self.accounts = accounts_from_descriptors(descriptors, NETWORK)
        self.deposit: WatchOnlyWallet = parse_wallet(descriptors["deposit"], NETWORK)
        self.hot: WatchOnlyWallet = parse_wallet(descriptors["hot"], NETWORK)

    def utxo(self, wallet: str, index: int, value: int, *, chain: int = 0,
             txid: str | None = None, vout: int = 0) -> PsbtInput:
        """A coin of ours with its previous transaction (made up, so its txid is real);
        ``txid`` only tells coins of the same key apart."""
        w = self.deposit if wallet == "deposit" else self.hot
        spk = w.derive(index, change=chain).script_pubkey
        prev = prev_tx(spk, value, vout, salt=(txid or f"{index + 1:02x}").encode())
        return PsbtInput(bytes(prev.txid()).hex(), vout, value, spk, wallet, chain, index,
                         prev.serialize())

    def change(self, index: int, amount: int) -> PsbtOutput:
        return PsbtOutput(self.hot.derive(index, change=1).script_pubkey, amount, index)

    def payout(self, *, fee: int = 1_000, change_index: int = 3) -> Payout:
        # Value leaves only from hot coins (deposit coins are swept first).
        inputs = [self.utxo("hot", 0, 100_000), self.utxo("hot", 7, 40_000),
                  self.utxo("hot", 2, 25_000, chain=1, vout=1)]
        payments = [Payment(PAY_A, 60_000, "wd_a"), Payment(PAY_B, 30_000, "wd_b")]
        change = sum(i.value_sat for i in inputs) - 90_000 - fee
        outputs = [PsbtOutput(PAY_A, 60_000), self.change(change_index, change),
                   PsbtOutput(PAY_B, 30_000)]
        psbt = make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=self.accounts)
        return Payout(inputs, outputs, payments, psbt)


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def signer(audit_path: Path) -> HotSigner:
    return HotSigner(SEED, NETWORK, audit_log=audit_path)


@pytest.fixture
def builder(signer: HotSigner) -> Builder:
    return Builder(signer.descriptors())


# ------------------------------------------------------------------ the cold wallet
COLD_PATH = "m/48h/1h/0h/2h"  # BIP48 multisig P2WSH account 0 on test networks


def cosigner(k: int) -> bip32.HDKey:
    """The root key of offline cosigner ``k`` (a fixed seed each; never the signer's)."""
    return bip32.HDKey.from_seed(bytes([0xC0 + k]) * 32, version=NETWORKS["regtest"]["xprv"])


def cold_descriptor(m: int = 2, n: int = 3, *, first: int = 0) -> str:
    """``wsh(sortedmulti(m,[fp/48h/1h/0h/2h]tpub…/<0;1>/*,…))`` of cosigners first..first+n."""
    keys = []
    for k in range(first, first + n):
        root = cosigner(k)
        account = root.derive(COLD_PATH).to_public(version=NETWORKS["regtest"]["xpub"])
        origin = f"[{root.my_fingerprint.hex()}{COLD_PATH[1:]}]"
        keys.append(f"{origin}{account.to_base58()}/<0;1>/*")
    return str(add_checksum(f"wsh(sortedmulti({m},{','.join(keys)}))"))


def cold_derivations(descriptor: str, chain: int, index: int
                     ) -> dict[ec.PublicKey, DerivationPath]:
    """What a PSBT builder puts on a cold output: every cosigner's key at chain/index with
    its master fingerprint and full path (from the public descriptor only)."""
    wallet = parse_wallet(descriptor, NETWORK)
    out = {}
    for key in wallet.keys:
        fp, _, path = key.origin.strip("[]").partition("/")
        full = [*parse_path(path), chain, index]
        out[ec.PublicKey.parse(key.key.pubkey_at(chain, index))] = \
            DerivationPath(bytes.fromhex(fp), full)
    return out


def hot_receive_derivation(builder: Builder, index: int) -> dict[ec.PublicKey, DerivationPath]:
    acc = builder.accounts["hot"]
    return {ec.PublicKey.parse(acc.pubkey(0, index)):
            DerivationPath(acc.fingerprint, [*acc.path, 0, index])}


def with_output_derivations(psbt_b64: str,
                            derivations: dict[int, dict[ec.PublicKey, DerivationPath]]) -> str:
    psbt = PSBT.from_string(psbt_b64)
    for n, ders in derivations.items():
        psbt.outputs[n].bip32_derivations.update(ders)
    return str(psbt.to_base64())
