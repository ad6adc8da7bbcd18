"""Bitcoin wire primitives: transactions with their ids and sizes, 80-byte headers, blocks,
merkle roots, script numbers.

A ``Tx`` wraps an ``embit`` transaction together with its exact serialization, so the txid
(double-SHA256 of the serialization without witness), the wtxid (of the full serialization)
and BIP141 weight are computed once and agree byte for byte with Bitcoin Core. Parsing is
strict: bytes that do not re-serialize identically (trailing garbage, a superfluous witness
marker, truncation) are not a transaction.

Hashes are kept in *internal* byte order (as hashed) in ``bytes`` and shown reversed in hex,
the way Bitcoin Core prints txids and block hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, NamedTuple

from embit import compact
from embit.transaction import Transaction

from satvault.simnet.errors import DecodeFailed

__all__ = [
    "COIN",
    "MAX_MONEY",
    "Block",
    "Coin",
    "Header",
    "Outpoint",
    "Tx",
    "format_feerate",
    "format_money",
    "hash_to_hex",
    "hex_to_hash",
    "merkle_root",
    "script_num",
    "script_num_decode",
    "sha256d",
]

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN

Outpoint = tuple[str, int]
"""(txid hex, output index)."""


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_hex(h: bytes) -> str:
    return h[::-1].hex()


def hex_to_hash(s: str) -> bytes:
    return bytes.fromhex(s)[::-1]


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root over internal-order hashes (the last one is paired with itself)."""
    level = list(hashes)
    if not level:
        return b"\x00" * 32
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def script_num(n: int) -> bytes:
    """CScriptNum serialization (minimal little-endian, sign in the top bit)."""
    if n == 0:
        return b""
    neg = n < 0
    v = -n if neg else n
    out = bytearray()
    while v:
        out.append(v & 0xFF)
        v >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0x00)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def script_num_decode(b: bytes) -> int:
    if not b:
        return 0
    v = int.from_bytes(b, "little")
    if b[-1] & 0x80:
        return -(v & ~(0x80 << (8 * (len(b) - 1))))
    return v


def _stripped(tx: Any) -> bytes:
    parts = [tx.version.to_bytes(4, "little"), compact.to_bytes(len(tx.vin))]
    parts += [inp.serialize() for inp in tx.vin]
    parts.append(compact.to_bytes(len(tx.vout)))
    parts += [out.serialize() for out in tx.vout]
    parts.append(tx.locktime.to_bytes(4, "little"))
    return b"".join(parts)


@dataclass(frozen=True, eq=False)
class Tx:
    """A transaction with its serialization and identifiers."""

    tx: Any  # embit.transaction.Transaction
    raw: bytes
    stripped: bytes
    txid: str
    wtxid: str

    @classmethod
    def from_embit(cls, tx: Any) -> Tx:
        raw = tx.serialize()
        stripped = _stripped(tx)
        return cls(tx, raw, stripped, hash_to_hex(sha256d(stripped)), hash_to_hex(sha256d(raw)))

    @classmethod
    def parse(cls, raw: bytes) -> Tx:
        try:
            stream = BytesIO(raw)
            tx = Transaction.read_from(stream)
            if stream.read(1):
                raise ValueError("trailing bytes")
            out = cls.from_embit(tx)
        except Exception as exc:
            raise DecodeFailed("TX decode failed") from exc
        if out.raw != raw:
            raise DecodeFailed("TX decode failed")
        return out

    @classmethod
    def from_hex(cls, s: str) -> Tx:
        try:
            raw = bytes.fromhex(s)
        except ValueError as exc:
            raise DecodeFailed("TX decode failed") from exc
        return cls.parse(raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def weight(self) -> int:
        return len(self.stripped) * 3 + len(self.raw)

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4

    @property
    def txid_bytes(self) -> bytes:
        return hex_to_hash(self.txid)

    @property
    def wtxid_bytes(self) -> bytes:
        return hex_to_hash(self.wtxid)

    @property
    def is_coinbase(self) -> bool:
        vin = self.tx.vin
        return len(vin) == 1 and vin[0].txid == b"\x00" * 32 and vin[0].vout == 0xFFFFFFFF

    @property
    def has_witness(self) -> bool:
        return len(self.raw) != len(self.stripped)

    def outpoints(self) -> list[Outpoint]:
        return [(inp.txid.hex(), inp.vout) for inp in self.tx.vin]


@dataclass(frozen=True)
class Header:
    version: int
    prev: bytes
    merkle: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (self.version.to_bytes(4, "little") + self.prev + self.merkle
                + self.time.to_bytes(4, "little") + self.bits.to_bytes(4, "little")
                + self.nonce.to_bytes(4, "little"))

    @classmethod
    def parse(cls, b: bytes) -> Header:
        if len(b) != 80:
            raise ValueError("a header is 80 bytes")
        return cls(int.from_bytes(b[0:4], "little"), b[4:36], b[36:68],
                   int.from_bytes(b[68:72], "little"), int.from_bytes(b[72:76], "little"),
                   int.from_bytes(b[76:80], "little"))

    @property
    def hash(self) -> str:
        return hash_to_hex(sha256d(self.serialize()))

    def target(self) -> int:
        exponent, mantissa = self.bits >> 24, self.bits & 0x7FFFFF
        return mantissa << (8 * (exponent - 3))

    def meets_target(self) -> bool:
        return int.from_bytes(sha256d(self.serialize()), "little") <= self.target()


@dataclass(frozen=True, eq=False)
class Block:
    header: Header
    txs: tuple[Tx, ...]
    height: int

    @property
    def hash(self) -> str:
        return self.header.hash

    def serialize(self) -> bytes:
        count: bytes = compact.to_bytes(len(self.txs))
        return self.header.serialize() + count + b"".join(t.raw for t in self.txs)

    def stripped_size(self) -> int:
        return 80 + len(compact.to_bytes(len(self.txs))) + sum(len(t.stripped) for t in self.txs)

    def size(self) -> int:
        return 80 + len(compact.to_bytes(len(self.txs))) + sum(t.size for t in self.txs)

    def weight(self) -> int:
        return self.stripped_size() * 3 + self.size()

    @classmethod
    def parse(cls, raw: bytes, height: int) -> Block:
        header = Header.parse(raw[:80])
        stream = BytesIO(raw[80:])
        n = compact.read_from(stream)
        txs = []
        for _ in range(n):
            start = stream.tell()
            tx = Transaction.read_from(stream)
            end = stream.tell()
            parsed = Tx.from_embit(tx)
            if parsed.raw != raw[80 + start:80 + end]:
                raise ValueError("non-canonical transaction in block")
            txs.append(parsed)
        if stream.read(1):
            raise ValueError("trailing bytes after block")
        return cls(header, tuple(txs), height)


class Coin(NamedTuple):
    """An unspent output: value in satoshis, scriptPubKey, the height that created it."""

    value: int
    spk: bytes
    height: int
    coinbase: bool = False


def format_money(sat: int) -> str:
    """Core's FormatMoney: 8 decimals, trailing zeros trimmed down to two."""
    q, r = divmod(abs(sat), COIN)
    s = f"{'-' if sat < 0 else ''}{q}.{r:08d}"
    while s.endswith("0") and s[-3] != ".":
        s = s[:-1]
    return s


def format_feerate(sat_per_kvb: int) -> str:
    """Core's CFeeRate::ToString: ``0.00001000 BTC/kvB``."""
    return f"{sat_per_kvb // COIN}.{sat_per_kvb % COIN:08d} BTC/kvB"
