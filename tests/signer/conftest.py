"""Signer fixtures: a fixed seed, a HotSigner with an audit log, and a payout builder that
uses only what the web side has (the descriptors) to make PSBTs from fake UTXOs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from embit import bip39

from satvault.onchain.descriptors import WatchOnlyWallet, parse_wallet
from satvault.signer import HotSigner
from satvault.signing import (
    Payment,
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)

NETWORK = "regtest"
ENTROPY = bytes(range(100, 132))
MNEMONIC = bip39.mnemonic_from_bytes(ENTROPY)
SEED = bip39.mnemonic_to_seed(MNEMONIC)

PAY_A = bytes.fromhex("0014") + bytes(range(20))  # someone else's P2WPKH
PAY_B = bytes.fromhex("0020") + bytes(range(32))  # someone else's P2WSH


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
        w = self.deposit if wallet == "deposit" else self.hot
        spk = w.derive(index, change=chain).script_pubkey
        return PsbtInput(txid or f"{index + 1:02x}" * 32, vout, value, spk, wallet, chain, index)

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
