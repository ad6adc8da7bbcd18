"""The encrypted seed file: round trip, passphrase and tamper detection, permissions."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from embit import bip39

from satvault.onchain.keys import parse_extended_key
from satvault.signer import HotSigner, create_seed_file, load_seed_file
from satvault.signer.seed import passphrase_from_env_or_file, read_public_info
from satvault.signing.errors import (
    CorruptSeedFile,
    NoPassphrase,
    SeedError,
    SeedFileExists,
    WrongPassphrase,
)
from tests.signer.conftest import ENTROPY, MNEMONIC, SEED

VECTORS = Path(__file__).parent.parent / "vectors"
PASS = "correct horse battery staple"


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed.json"
    create_seed_file(path, PASS, network="regtest", entropy=ENTROPY)
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    mnemonic = create_seed_file(path, PASS, network="regtest")
    assert len(mnemonic.split()) == 24 and bip39.mnemonic_is_valid(mnemonic)
    material = load_seed_file(path, PASS)
    assert material.seed == bip39.mnemonic_to_seed(mnemonic)
    assert material.network == "regtest"
    doc = json.loads(path.read_text())
    assert doc["kdf"]["name"] == "scrypt"
    assert (doc["kdf"]["n"], doc["kdf"]["r"], doc["kdf"]["p"]) == (2**15, 8, 1)
    assert len(bytes.fromhex(doc["kdf"]["salt"])) == 16
    assert doc["cipher"]["name"] == "aes-256-gcm"
    assert len(bytes.fromhex(doc["cipher"]["nonce"])) == 12
    assert doc["accounts"]["deposit"]["path"] == "m/84'/1'/0'"
    assert doc["accounts"]["hot"]["path"] == "m/84'/1'/1'"
    assert doc["accounts"]["hot"]["xpub"] == material.xpubs["hot"]
    assert doc["fingerprint"] == material.fingerprint.hex()
    # nothing secret in clear
    text = path.read_text()
    assert material.seed.hex() not in text and mnemonic.split()[0] + " " not in text
    assert "prv" not in text
    assert material.seed.hex() not in repr(material)


def test_known_entropy_restores_the_same_seed(seed_file: Path) -> None:
    material = load_seed_file(seed_file, PASS)
    assert material.seed == SEED
    assert HotSigner.from_material(material).descriptors() == HotSigner(SEED, "regtest"
                                                                         ).descriptors()
    assert bip39.mnemonic_from_bytes(ENTROPY) == MNEMONIC


def test_bip84_vector_account_xpub(tmp_path: Path) -> None:
    vec = json.loads((VECTORS / "bip84.json").read_text())["vectors"]
    entropy = bip39.mnemonic_to_bytes(vec["mnemonic"])
    path = tmp_path / "main.json"
    assert create_seed_file(path, PASS, network="mainnet", entropy=entropy) == vec["mnemonic"]
    material = load_seed_file(path, PASS)
    expected = parse_extended_key(vec["account_0"]["xpub"]).serialize("xpub")
    assert material.xpubs["deposit"] == expected
    assert f"/84h/0h/0h]{expected}/<0;1>/*" in HotSigner.from_material(material
                                                                       ).descriptors()["deposit"]


def test_file_mode_is_0600(seed_file: Path) -> None:
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600


def test_refuses_to_overwrite(seed_file: Path) -> None:
    before = seed_file.read_bytes()
    with pytest.raises(SeedFileExists):
        create_seed_file(seed_file, PASS, network="regtest")
    assert seed_file.read_bytes() == before


def test_wrong_passphrase(seed_file: Path) -> None:
    with pytest.raises(WrongPassphrase):
        load_seed_file(seed_file, PASS + "!")


def _tampered(seed_file: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
              ) -> Path:
    doc = json.loads(seed_file.read_text())
    edit(doc)
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(doc))
    return out


def test_tampered_ciphertext(seed_file: Path, tmp_path: Path) -> None:
    def flip(doc: dict[str, Any]) -> None:
        ct = bytearray.fromhex(doc["cipher"]["ciphertext"])
        ct[5] ^= 0x01
        doc["cipher"]["ciphertext"] = ct.hex()

    with pytest.raises(CorruptSeedFile):
        load_seed_file(_tampered(seed_file, tmp_path, flip), PASS)


def test_tampered_clear_xpub(seed_file: Path, tmp_path: Path) -> None:
    other = HotSigner(bytes(64), "regtest").descriptors()["hot"].split("]")[1].split("/")[0]

    def swap(doc: dict[str, Any]) -> None:
        doc["accounts"]["hot"]["xpub"] = other

    tampered = _tampered(seed_file, tmp_path, swap)
    assert read_public_info(tampered)["accounts"]["hot"]["xpub"] == other  # display only
    with pytest.raises(CorruptSeedFile):
        load_seed_file(tampered, PASS)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "satvault-signer-seed"}',
                                  '{"format": "satvault-signer-seed", "version": 1}'])
def test_garbage_is_corrupt(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CorruptSeedFile):
        load_seed_file(path, PASS)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SeedError):
        load_seed_file(tmp_path / "nope.json", PASS)
    with pytest.raises(SeedError):
        create_seed_file(tmp_path / "x.json", PASS, network="moon")
    with pytest.raises(SeedError):
        create_seed_file(tmp_path / "x.json", PASS, network="regtest", entropy=b"short")
    with pytest.raises(NoPassphrase):
        create_seed_file(tmp_path / "x.json", "", network="regtest")
    assert not (tmp_path / "x.json").exists()


def test_passphrase_sources(tmp_path: Path) -> None:
    assert passphrase_from_env_or_file({"SATVAULT_SIGNER_PASSPHRASE": "env"}) == "env"
    f = tmp_path / "pass"
    f.write_text("from file\n")
    assert passphrase_from_env_or_file({"SATVAULT_SIGNER_PASSPHRASE_FILE": str(f)}) == "from file"
    with pytest.raises(NoPassphrase):
        passphrase_from_env_or_file({})
    with pytest.raises(NoPassphrase):
        passphrase_from_env_or_file({"SATVAULT_SIGNER_PASSPHRASE_FILE": str(tmp_path / "none")})
