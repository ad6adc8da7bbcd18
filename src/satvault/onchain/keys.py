"""Extended public keys and fast non-hardened derivation (BIP32 CKDpub).

The web process only ever sees *account-level public keys* (``xpub``/``ypub``/``zpub`` and
their test-network twins); anything private is refused at parse time. Child keys are derived
with libsecp256k1 through coincurve — one HMAC-SHA512 and one point tweak per address — which
is several times faster than a general-purpose HD wallet object per address.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

import coincurve
from embit import base58

from satvault.onchain.errors import InvalidKey

__all__ = [
    "NETWORK_FAMILY",
    "ExtendedPubKey",
    "KeyFamily",
    "hash160",
    "parse_extended_key",
    "tagged_hash",
    "taproot_output_key",
]

HARDENED = 0x80000000


class KeyFamily(StrEnum):
    MAIN = "main"
    TEST = "test"


NETWORK_FAMILY = {"mainnet": KeyFamily.MAIN, "testnet": KeyFamily.TEST,
                  "signet": KeyFamily.TEST, "regtest": KeyFamily.TEST}

# SLIP-132 version bytes: the prefix also hints at the script type the wallet uses.
_PUBLIC_VERSIONS: dict[bytes, tuple[KeyFamily, str]] = {
    bytes.fromhex("0488b21e"): (KeyFamily.MAIN, "xpub"),
    bytes.fromhex("049d7cb2"): (KeyFamily.MAIN, "ypub"),
    bytes.fromhex("04b24746"): (KeyFamily.MAIN, "zpub"),
    bytes.fromhex("0295b43f"): (KeyFamily.MAIN, "Ypub"),
    bytes.fromhex("02aa7ed3"): (KeyFamily.MAIN, "Zpub"),
    bytes.fromhex("043587cf"): (KeyFamily.TEST, "tpub"),
    bytes.fromhex("044a5262"): (KeyFamily.TEST, "upub"),
    bytes.fromhex("045f1cf6"): (KeyFamily.TEST, "vpub"),
    bytes.fromhex("024289ef"): (KeyFamily.TEST, "Upub"),
    bytes.fromhex("02575483"): (KeyFamily.TEST, "Vpub"),
}
_PRIVATE_VERSIONS = {bytes.fromhex(v) for v in (
    "0488ade4", "049d7878", "04b2430c", "0295b005", "02aa7a99",
    "04358394", "044a4e28", "045f18bc", "02424eb5", "02575048")}


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def tagged_hash(tag: str, data: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def taproot_output_key(internal_pubkey: bytes) -> bytes:
    """BIP86: tweak the internal key with no script tree; returns the 32-byte x-only key."""
    xonly = internal_pubkey[1:] if len(internal_pubkey) == 33 else internal_pubkey
    tweak = tagged_hash("TapTweak", xonly)
    even = coincurve.PublicKey(b"\x02" + xonly)
    return bytes(even.add(tweak).format(compressed=True))[1:]


@dataclass(frozen=True, slots=True)
class ExtendedPubKey:
    pubkey: bytes  # 33-byte compressed point
    chain_code: bytes
    depth: int
    parent_fingerprint: bytes
    child_number: int
    family: KeyFamily
    prefix: str  # "xpub", "zpub", "tpub", …
    _cache: dict[int, ExtendedPubKey] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fingerprint(self) -> bytes:
        return hash160(self.pubkey)[:4]

    def child(self, index: int) -> ExtendedPubKey:
        """CKDpub. Hardened indices need the private key, which we never have."""
        if not 0 <= index < HARDENED:
            raise InvalidKey(f"cannot derive index {index} from a public key")
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        digest = hmac.new(self.chain_code, self.pubkey + index.to_bytes(4, "big"),
                          hashlib.sha512).digest()
        try:
            point = coincurve.PublicKey(self.pubkey).add(digest[:32])
        except ValueError as exc:  # probability ~2^-127; BIP32 says skip the index
            raise InvalidKey(f"index {index} yields an invalid key; use the next") from exc
        child = ExtendedPubKey(point.format(compressed=True), digest[32:], self.depth + 1,
                               self.fingerprint, index, self.family, self.prefix)
        if len(self._cache) < 4:  # cache only the chain level (receive/change)
            self._cache[index] = child
        return child

    def pubkey_at(self, *path: int) -> bytes:
        """Public key at a relative path; the last step is not cached (one per address)."""
        node = self
        for step in path[:-1]:
            node = node.child(step)
        if not path:
            return node.pubkey
        last = path[-1]
        digest = hmac.new(node.chain_code, node.pubkey + last.to_bytes(4, "big"),
                          hashlib.sha512).digest()
        try:
            return bytes(coincurve.PublicKey(node.pubkey).add(digest[:32]).format(compressed=True))
        except ValueError as exc:
            raise InvalidKey(f"index {last} yields an invalid key; use the next") from exc

    def serialize(self, prefix: str | None = None) -> str:
        wanted = prefix or self.prefix
        version = next(v for v, (fam, p) in _PUBLIC_VERSIONS.items()
                       if p == wanted and fam == self.family)
        raw = (version + bytes([self.depth]) + self.parent_fingerprint
               + self.child_number.to_bytes(4, "big") + self.chain_code + self.pubkey)
        return str(base58.encode_check(raw))


def parse_extended_key(text: str) -> ExtendedPubKey:
    """Parse an extended *public* key; private keys are refused outright."""
    try:
        raw = base58.decode_check(text.strip())
    except Exception as exc:  # embit raises ValueError/various on bad base58 or checksum
        raise InvalidKey("not an extended key (bad base58 or checksum)") from exc
    if len(raw) != 78:
        raise InvalidKey(f"an extended key is 78 bytes, this one is {len(raw)}")
    version = raw[:4]
    if version in _PRIVATE_VERSIONS:
        raise InvalidKey("this is a PRIVATE extended key; give the account's public key "
                         "(xpub/ypub/zpub/tpub/upub/vpub): private keys never enter satvault's "
                         "web process")
    if version not in _PUBLIC_VERSIONS:
        raise InvalidKey(f"unknown extended key version {version.hex()}")
    family, prefix = _PUBLIC_VERSIONS[version]
    depth, fingerprint = raw[4], raw[5:9]
    child_number = int.from_bytes(raw[9:13], "big")
    chain_code, pubkey = raw[13:45], raw[45:78]
    if depth == 0 and (fingerprint != b"\0\0\0\0" or child_number != 0):
        raise InvalidKey("a depth-0 key must have a zero parent fingerprint and index")
    if pubkey[0] not in (2, 3):
        raise InvalidKey("the public key is not a compressed point")
    try:
        coincurve.PublicKey(pubkey)
    except ValueError as exc:
        raise InvalidKey("the public key is not on the curve") from exc
    return ExtendedPubKey(pubkey, chain_code, depth, fingerprint, child_number, family, prefix)
