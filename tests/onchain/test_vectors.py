"""Published vectors (copied into tests/vectors/ with their sources): BIP32 1-4, BIP49, BIP84,
BIP86 and BIP173/BIP350 addresses, run through satvault's own derivation and parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from embit import bech32

from satvault.onchain.addresses import parse_address
from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.errors import InvalidAddress, InvalidKey
from satvault.onchain.keys import HARDENED, parse_extended_key

VECTORS = Path(__file__).parent.parent / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())["vectors"]


def _last_step(path: str) -> int:
    step = path.rsplit("/", 1)[-1]
    return int(step[:-1]) + HARDENED if step[-1] in "hH'" else int(step)


BIP32_PAIRS = [
    (v["name"], parent, child)
    for v in load("bip32")["derivation"]
    for parent, child in zip(v["chains"], v["chains"][1:], strict=False)
    if child["path"].startswith(parent["path"]) and _last_step(child["path"]) < HARDENED
]


@pytest.mark.parametrize(("name", "parent", "child"), BIP32_PAIRS,
                         ids=[f"{n}:{c['path']}" for n, _, c in BIP32_PAIRS])
def test_bip32_public_derivation(name, parent, child):
    key = parse_extended_key(parent["ext_pub"])
    assert key.serialize() == parent["ext_pub"]
    assert key.child(_last_step(child["path"])).serialize() == child["ext_pub"]


def test_bip32_every_public_key_round_trips_and_private_keys_are_refused():
    chains = [c for v in load("bip32")["derivation"] for c in v["chains"]]
    assert len(chains) >= 15
    for c in chains:
        assert parse_extended_key(c["ext_pub"]).serialize() == c["ext_pub"]
        with pytest.raises(InvalidKey, match="PRIVATE"):
            parse_extended_key(c["ext_prv"])


@pytest.mark.parametrize("case", load("bip32")["invalid_extended_keys"],
                         ids=lambda c: c["reason"])
def test_bip32_invalid_keys_are_refused(case):
    with pytest.raises(InvalidKey):
        parse_extended_key(case["key"])


@pytest.mark.parametrize(("bip", "template", "network"), [
    ("bip84", "{xpub}", "mainnet"),
    ("bip86", "tr({xpub})", "mainnet"),
    ("bip49", "{xpub}", "testnet"),
])
def test_account_vectors(bip, template, network):
    v = load(bip)
    wallet = parse_wallet(template.format(xpub=v["account_0"]["xpub"]), network)
    checked = 0
    for entry in v["addresses"]:
        if "address" not in entry:
            continue
        change, index = (int(x) for x in entry["path"].split("/")[-2:])
        assert wallet.derive(index, change=change).address == entry["address"], entry["label"]
        checked += 1
    assert checked >= 1


def _network_for(address: str) -> str:
    hrp = address.lower().rsplit("1", 1)[0]
    return {"bc": "mainnet", "tb": "testnet", "bcrt": "regtest"}[hrp]


def _witness_version_char(address: str) -> str:
    return address.lower().rsplit("1", 1)[1][0]


# BIP350 supersedes BIP173 for witness v1+: those BIP173 "valid" strings use bech32 and are
# now invalid (their bech32m re-encodings are in BIP350's list).
BIP173_V0 = [c for c in load("bip173")["valid_segwit_addresses"]
             if _witness_version_char(c["address"]) == "q"]
BIP173_V1PLUS = [c for c in load("bip173")["valid_segwit_addresses"]
                 if _witness_version_char(c["address"]) != "q"]


@pytest.mark.parametrize("case", BIP173_V1PLUS, ids=lambda c: c["address"])
def test_bip173_v1_plus_bech32_is_invalid_after_bip350(case):
    with pytest.raises(InvalidAddress):
        parse_address(case["address"], _network_for(case["address"]))


@pytest.mark.parametrize("case", BIP173_V0 + load("bip350")["valid_segwit_addresses"],
                         ids=lambda c: c["address"])
def test_valid_segwit_addresses(case):
    info = parse_address(case["address"], _network_for(case["address"]))
    assert info.script_pubkey.hex() == case["scriptPubKey"]


@pytest.mark.parametrize("case", load("bip173")["invalid_segwit_addresses"]
                         + load("bip350")["invalid_segwit_addresses"],
                         ids=lambda c: c["reason"])
def test_invalid_segwit_addresses(case):
    for network in ("mainnet", "testnet", "regtest"):
        with pytest.raises(InvalidAddress):
            parse_address(case["address"], network)


def test_bech32_and_bech32m_checksums():
    v173, v350 = load("bip173"), load("bip350")
    for s in v173["valid_bech32"]:
        assert bech32.bech32_decode(s)[0] == bech32.Encoding.BECH32, s
    for s in v350["valid_bech32m"]:
        assert bech32.bech32_decode(s)[0] == bech32.Encoding.BECH32M, s
    for case in v173["invalid_bech32"] + v350["invalid_bech32m"]:
        s = case["string"] if isinstance(case, dict) else case
        assert bech32.bech32_decode(s)[0] is None, case
