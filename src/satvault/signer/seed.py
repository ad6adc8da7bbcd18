"""The signer's seed, encrypted at rest.

The seed is a BIP39 mnemonic (24 words by default, no BIP39 passphrase) turned into the
64-byte BIP39 seed. The file holds that seed encrypted with AES-256-GCM under a key stretched
from an operator passphrase with scrypt, plus, in clear, what is public anyway: the network,
the master fingerprint and the two account xpubs (so an operator can read them without the
passphrase; :func:`load_seed_file` re-derives and compares them)::

    {
      "format": "satvault-signer-seed", "version": 1,
      "network": "regtest", "created_at": "2026-01-01T00:00:00Z",
      "fingerprint": "73c5da0a",
      "accounts": {"deposit": {"path": "m/84'/1'/0'", "xpub": "tpub…"},
                   "hot":     {"path": "m/84'/1'/1'", "xpub": "tpub…"}},
      "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<hex 16>",
              "check": "<hex 32>"},
      "cipher": {"name": "aes-256-gcm", "nonce": "<hex 12>", "ciphertext": "<hex 64+16>"}
    }

scrypt yields 64 bytes: the first 32 are the AES key, the last 32 key an HMAC whose value
(``kdf.check``) tells a wrong passphrase (:class:`WrongPassphrase`) from a damaged file
(:class:`CorruptSeedFile`). Everything outside ``cipher`` is the GCM associated data, so editing
the network or an xpub in clear is caught as corruption too. (Editing the salt or the KDF
parameters changes the derived key and therefore reads as a wrong passphrase.)

The file is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from embit import bip39

from satvault.kernel import strictjson
from satvault.signer._hd import Keyring
from satvault.signing.errors import (
    CorruptSeedFile,
    NoPassphrase,
    SeedError,
    SeedFileExists,
    WrongPassphrase,
)
from satvault.signing.paths import NETWORKS, WalletName, account_path, format_path

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "SeedMaterial",
    "create_seed_file",
    "load_seed_file",
    "passphrase_from_env_or_file",
    "read_public_info",
]

PASSPHRASE_ENV = "SATVAULT_SIGNER_PASSPHRASE"
PASSPHRASE_FILE_ENV = "SATVAULT_SIGNER_PASSPHRASE_FILE"

FORMAT = "satvault-signer-seed"
VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SALT_LEN, _NONCE_LEN, _SEED_LEN = 16, 12, 64
_CHECK_LABEL = b"satvault signer passphrase check"
_ENTROPY_LENGTHS = (16, 20, 24, 28, 32)  # 12 … 24 words


@dataclass(frozen=True, slots=True)
class SeedMaterial:
    """A decrypted seed. ``seed`` is secret: it is kept out of ``repr``."""

    seed: bytes = field(repr=False)
    network: str
    fingerprint: bytes
    xpubs: Mapping[str, str]  # "deposit"/"hot" → account xpub


def passphrase_from_env_or_file(environ: Mapping[str, str] | None = None) -> str:
    """The seed passphrase from ``SATVAULT_SIGNER_PASSPHRASE``, else from the file named by
    ``SATVAULT_SIGNER_PASSPHRASE_FILE`` (one trailing newline stripped)."""
    env = os.environ if environ is None else environ
    value = env.get(PASSPHRASE_ENV)
    if value:
        return value
    file_name = env.get(PASSPHRASE_FILE_ENV)
    if file_name:
        try:
            text = Path(file_name).read_text(encoding="utf-8")
        except OSError as exc:
            raise NoPassphrase(f"cannot read {PASSPHRASE_FILE_ENV}={file_name}: "
                               f"{exc.strerror}") from exc
        text = text.removesuffix("\n").removesuffix("\r")
        if text:
            return text
        raise NoPassphrase(f"the passphrase file {file_name} is empty")
    raise NoPassphrase(f"set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} to the signer's seed "
                       "passphrase")


def _stretch(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    derived = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return derived[:32], derived[32:]


def _check_value(check_key: bytes) -> bytes:
    return hmac.new(check_key, _CHECK_LABEL, hashlib.sha256).digest()


def _aad(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _public_header(keyring: Keyring) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "network": keyring.network,
        "fingerprint": keyring.fingerprint.hex(),
        "accounts": {w.value: {"path": format_path(account_path(keyring.network, w)),
                               "xpub": keyring.account_xpub(w)} for w in WalletName},
    }


def create_seed_file(path: str | os.PathLike[str], passphrase: str, *, network: str,
                     entropy: bytes | None = None) -> str:
    """Create a new seed, write it encrypted to ``path`` (mode 0600, never overwriting) and
    return its mnemonic, which the caller shows to the operator once and forgets.

    ``entropy`` (16-32 bytes) restores a known mnemonic; by default 32 random bytes (24 words).
    """
    if network not in NETWORKS:
        raise SeedError(f"unknown network {network!r}; one of {', '.join(NETWORKS)}")
    if not passphrase:
        raise NoPassphrase("an empty passphrase would leave the seed unprotected")
    raw = secrets.token_bytes(32) if entropy is None else bytes(entropy)
    if len(raw) not in _ENTROPY_LENGTHS:
        raise SeedError(f"BIP39 entropy is 16, 20, 24, 28 or 32 bytes, not {len(raw)}")
    mnemonic = str(bip39.mnemonic_from_bytes(raw))
    seed = bytes(bip39.mnemonic_to_seed(mnemonic))
    keyring = Keyring(seed, network)

    salt = secrets.token_bytes(_SALT_LEN)
    nonce = secrets.token_bytes(_NONCE_LEN)
    aes_key, check_key = _stretch(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = _public_header(keyring)
    header["created_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header["kdf"] = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                     "salt": salt.hex(), "check": _check_value(check_key).hex()}
    ciphertext = AESGCM(aes_key).encrypt(nonce, seed, _aad(header))
    document = {**header, "cipher": {"name": "aes-256-gcm", "nonce": nonce.hex(),
                                     "ciphertext": ciphertext.hex()}}
    data = (json.dumps(document, indent=2) + "\n").encode()

    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SeedFileExists(f"{target} exists; refusing to overwrite a seed file") from exc
    except OSError as exc:
        raise SeedError(f"cannot create {target}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask, never widened: be sure
        os.write(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise SeedError(f"cannot write {target}: {exc.strerror}") from exc
    os.close(fd)
    return mnemonic


def _field(doc: Mapping[str, Any], *keys: str) -> Any:
    node: Any = doc
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            raise CorruptSeedFile(f"the seed file has no {'.'.join(keys)}")
        node = node[k]
    return node


def _hex(doc: Mapping[str, Any], *keys: str, length: int | None = None) -> bytes:
    value = _field(doc, *keys)
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError) as exc:
        raise CorruptSeedFile(f"{'.'.join(keys)} is not hex") from exc
    if length is not None and len(raw) != length:
        raise CorruptSeedFile(f"{'.'.join(keys)} is {len(raw)} bytes, expected {length}")
    return raw


def _int(doc: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = _field(doc, "kdf", key)
    if type(value) is not int or not low <= value <= high:
        raise CorruptSeedFile(f"kdf.{key}={value!r} is out of range")
    return value


def read_public_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The clear part of a seed file (network, fingerprint, account xpubs), unauthenticated:
    for display only. Anything that matters goes through :func:`load_seed_file`."""
    doc = _read_document(Path(path))
    return {k: doc[k] for k in ("network", "fingerprint", "accounts", "created_at") if k in doc}


def _read_document(target: Path) -> dict[str, Any]:
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SeedError(f"no seed file at {target}") from exc
    except OSError as exc:
        raise SeedError(f"cannot read {target}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CorruptSeedFile(f"{target} is not a text file") from exc
    try:
        doc = strictjson.loads(text)
    except ValueError as exc:  # NaN and Infinity too: not JSON (RFC 8259)
        raise CorruptSeedFile(f"{target} is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptSeedFile(f"{target} is not a satvault signer seed file")
    if doc.get("version") != VERSION:
        raise CorruptSeedFile(f"unsupported seed file version {doc.get('version')!r}")
    return doc


def load_seed_file(path: str | os.PathLike[str], passphrase: str) -> SeedMaterial:
    """Decrypt a seed file. :class:`WrongPassphrase` if the passphrase does not open it,
    :class:`CorruptSeedFile` if it is damaged or its clear fields were edited."""
    doc = _read_document(Path(path))
    if _field(doc, "kdf", "name") != "scrypt" or _field(doc, "cipher", "name") != "aes-256-gcm":
        raise CorruptSeedFile("unsupported KDF or cipher")
    network = _field(doc, "network")
    if network not in NETWORKS:
        raise CorruptSeedFile(f"unknown network {network!r}")
    # Bounds keep a tampered file from making us allocate gigabytes.
    n = _int(doc, "n", 2**10, 2**20)
    if n & (n - 1):
        raise CorruptSeedFile("kdf.n is not a power of two")
    r, p = _int(doc, "r", 1, 32), _int(doc, "p", 1, 16)
    salt = _hex(doc, "kdf", "salt")
    check = _hex(doc, "kdf", "check", length=32)
    nonce = _hex(doc, "cipher", "nonce", length=_NONCE_LEN)
    ciphertext = _hex(doc, "cipher", "ciphertext")

    aes_key, check_key = _stretch(passphrase, salt, n, r, p)
    if not hmac.compare_digest(_check_value(check_key), check):
        raise WrongPassphrase("the passphrase does not open this seed file")
    header = {k: v for k, v in doc.items() if k != "cipher"}
    try:
        seed = AESGCM(aes_key).decrypt(nonce, ciphertext, _aad(header))
    except InvalidTag as exc:
        raise CorruptSeedFile("the seed file was modified or damaged (authentication failed)"
                              ) from exc
    if len(seed) != _SEED_LEN:
        raise CorruptSeedFile(f"the decrypted seed is {len(seed)} bytes, expected {_SEED_LEN}")
    keyring = Keyring(seed, network)
    expected = _public_header(keyring)
    if any(doc.get(k) != v for k, v in expected.items()):
        raise CorruptSeedFile("the clear fingerprint or xpubs do not match the encrypted seed")
    return SeedMaterial(seed, network, keyring.fingerprint,
                        {w.value: keyring.account_xpub(w) for w in WalletName})
