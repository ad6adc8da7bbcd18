"""BOLT #11 payment requests: a fast writer and a reader.

The simulator issues hundreds of invoices a second, so it writes them itself, straight from
BOLT #11: the human-readable part ``ln`` + currency + shortest amount, then 5-bit words (a
35-bit timestamp and tagged fields ``type ‖ 10-bit length ‖ data``), a 65-byte recoverable
signature over ``sha256(hrp ‖ data words packed into bytes, zero-padded)`` and a bech32
checksum. For the same fields the result is exactly the string ``bolt11.encode`` produces
(the tests check this, and re-create BOLT #11's own signed examples), at a tenth of its cost.

Reading goes through the ``bolt11`` library (signature recovery, tagged-field rules); the
network keeps its own invoices in a dict, so this path only runs for foreign requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bolt11
from coincurve import PrivateKey
from embit import base58
from embit import bech32 as _bech32
from embit.script import address_to_scriptpubkey

from satvault.simnet.ln.errors import InvalidPaymentRequest

__all__ = [
    "CURRENCIES",
    "FEATURES_DEFAULT",
    "PayReq",
    "decode",
    "encode",
    "fallback_address",
    "fallback_words",
    "feature_map",
    "hrp_amount",
]

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _gen_table() -> tuple[int, ...]:
    """polymod step for the 5 bits shifted out at once: the XOR of the generators they pick."""
    table = []
    for b in range(32):
        acc = 0
        for i in range(5):
            if (b >> i) & 1:
                acc ^= _GEN[i]
        table.append(acc)
    return tuple(table)


_GEN_TABLE = _gen_table()

# network name -> BOLT #11 currency prefix
CURRENCIES = {"mainnet": "bc", "testnet": "tb", "signet": "tbs", "regtest": "bcrt"}
_BASE58_VERSIONS = {"bc": (0x00, 0x05), "tb": (0x6F, 0xC4), "tbs": (0x6F, 0xC4),
                    "bcrt": (0x6F, 0xC4)}
_SEGWIT_HRP = {"bc": "bc", "tb": "tb", "tbs": "tb", "bcrt": "bcrt"}

# var_onion_optin (8, required), payment_secret (14, required), basic_mpp (17, optional):
# what LND and Core Lightning put in every invoice.
FEATURES_DEFAULT = (1 << 8) | (1 << 14) | (1 << 17)
_FEATURE_NAMES = {8: "tlv-onion", 9: "tlv-onion", 14: "payment-addr", 15: "payment-addr",
                  16: "multi-path-payments", 17: "multi-path-payments"}


@dataclass(frozen=True, slots=True)
class PayReq:
    """What a payment request says (hex strings for hashes and keys)."""

    bolt11: str
    currency: str
    amount_msat: int | None
    timestamp: int
    payment_hash: str
    payee: str
    description: str = ""
    description_hash: str | None = None
    expiry: int = 3600
    min_final_cltv_expiry: int = 18
    payment_secret: str | None = None
    fallback_address: str | None = None
    features: int = 0
    signature: str = ""
    route_hints: list[list[dict[str, object]]] = field(default_factory=list)

    @property
    def expires_at(self) -> int:
        return self.timestamp + self.expiry

    def feature_bits(self) -> dict[int, dict[str, object]]:
        return feature_map(self.features)


def feature_map(bits: int) -> dict[int, dict[str, object]]:
    """LND's ``features`` map: bit -> {name, is_required, is_known}."""
    out: dict[int, dict[str, object]] = {}
    bit = 0
    while bits:
        if bits & 1:
            out[bit] = {"name": _FEATURE_NAMES.get(bit, "unknown"),
                        "is_required": bit % 2 == 0, "is_known": bit in _FEATURE_NAMES}
        bits >>= 1
        bit += 1
    return out


# --------------------------------------------------------------------------- 5-bit words
def _words_from_bytes(data: bytes) -> list[int]:
    nbits = len(data) * 8
    pad = -nbits % 5
    value = int.from_bytes(data, "big") << pad
    count = (nbits + pad) // 5
    return [(value >> (5 * (count - 1 - i))) & 31 for i in range(count)]


def _words_from_int(value: int) -> list[int]:
    """Big-endian 5-bit words, no leading zero words (BOLT #11: minimal data_length)."""
    out: list[int] = []
    while value:
        out.append(value & 31)
        value >>= 5
    out.reverse()
    return out


def _bytes_from_words(words: list[int]) -> bytes:
    value = 0
    for w in words:
        value = (value << 5) | w
    nbits = len(words) * 5
    pad = -nbits % 8
    return (value << pad).to_bytes((nbits + pad) // 8, "big")


def _tagged(tag: str, words: list[int]) -> list[int]:
    n = len(words)
    if n >= 1024:
        raise InvalidPaymentRequest(f"tagged field {tag!r} too long ({n} words)")
    return [_CHARSET_INDEX[tag], n >> 5, n & 31, *words]


def _checksum(hrp: str, words: list[int]) -> list[int]:
    chk = 1
    table = _GEN_TABLE
    for v in [*(ord(c) >> 5 for c in hrp), 0, *(ord(c) & 31 for c in hrp), *words,
              0, 0, 0, 0, 0, 0]:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v ^ table[top]
    chk ^= 1
    return [(chk >> 5 * (5 - i)) & 31 for i in range(6)]


def hrp_amount(amount_msat: int | None) -> str:
    """The shortest BOLT #11 amount for ``amount_msat`` ("" for none)."""
    return "" if not amount_msat else bolt11.utils.msat_to_amount(amount_msat)


# ------------------------------------------------------------------------------ fallback
def fallback_words(address: str, currency: str) -> list[int]:
    """The ``f`` field for an on-chain address: version word + program (BOLT #11)."""
    try:
        spk = address_to_scriptpubkey(address).data
    except Exception as exc:
        raise InvalidPaymentRequest(f"invalid fallback address {address!r}") from exc
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return [17, *_words_from_bytes(spk[3:23])]
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return [18, *_words_from_bytes(spk[2:22])]
    if 4 <= len(spk) <= 42 and (spk[0] == 0 or 0x51 <= spk[0] <= 0x60) and spk[1] == len(spk) - 2:
        version = 0 if spk[0] == 0 else spk[0] - 0x50
        return [version, *_words_from_bytes(spk[2:])]
    raise InvalidPaymentRequest(f"fallback address {address!r} has no BOLT #11 form")


def fallback_address(words: list[int], currency: str) -> str | None:
    """The address an ``f`` field names (None for an unknown version)."""
    if not words:
        return None
    version, program = words[0], words[1:]
    if version in (17, 18):
        payload = _bytes_from_words(program)[:20]
        prefix = _BASE58_VERSIONS.get(currency, (0x6F, 0xC4))[version - 17]
        return str(base58.encode_check(bytes([prefix]) + payload))
    if version <= 16:
        nbytes = len(program) * 5 // 8
        prog = _bytes_from_words(program)[:nbytes]
        encoding = _bech32.Encoding.BECH32 if version == 0 else _bech32.Encoding.BECH32M
        return str(_bech32.bech32_encode(encoding, _SEGWIT_HRP.get(currency, currency),
                                         [version, *_words_from_bytes(prog)]))
    return None


# -------------------------------------------------------------------------------- encode
def encode(*, key: PrivateKey, currency: str, amount_msat: int | None, timestamp: int,
           payment_hash: bytes, payment_secret: bytes, description: str | None = None,
           description_hash: bytes | None = None, expiry: int | None = 3600,
           min_final_cltv_expiry: int | None = 18, fallback: list[int] | None = None,
           features: int = FEATURES_DEFAULT) -> str:
    """A signed BOLT #11 string. Fields are written in the order p, s, d|h, x, c, f, 9."""
    if (description is None) == (description_hash is None):
        raise InvalidPaymentRequest("exactly one of description and description_hash")
    if len(payment_hash) != 32 or len(payment_secret) != 32:
        raise InvalidPaymentRequest("payment hash and secret are 32 bytes")
    hrp = "ln" + currency + hrp_amount(amount_msat)
    words = [(timestamp >> 5 * (6 - i)) & 31 for i in range(7)]
    words += _tagged("p", _words_from_bytes(payment_hash))
    words += _tagged("s", _words_from_bytes(payment_secret))
    if description_hash is not None:
        if len(description_hash) != 32:
            raise InvalidPaymentRequest("description_hash must be 32 bytes")
        words += _tagged("h", _words_from_bytes(description_hash))
    else:
        words += _tagged("d", _words_from_bytes((description or "").encode()))
    if expiry is not None:
        words += _tagged("x", _words_from_int(expiry))
    if min_final_cltv_expiry is not None:
        words += _tagged("c", _words_from_int(min_final_cltv_expiry))
    if fallback:
        words += _tagged("f", fallback)
    if features:
        words += _tagged("9", _words_from_int(features))
    signature = key.sign_recoverable(hrp.encode() + _bytes_from_words(words))
    words += _words_from_bytes(signature)
    return hrp + "1" + "".join(CHARSET[w] for w in [*words, *_checksum(hrp, words)])


# -------------------------------------------------------------------------------- decode
def _feature_int(features: object) -> int:
    data = getattr(features, "data", None)
    return int(data.uint) if data is not None and len(data) else 0


def decode(text: str) -> PayReq:
    """Parse and verify a payment request with the ``bolt11`` library."""
    text = text.strip()
    if text.lower().startswith("lightning:"):
        text = text[10:]
    try:
        inv = bolt11.decode(text, ignore_exceptions=True)
    except Exception as exc:
        raise InvalidPaymentRequest(f"invalid payment request: {exc or type(exc).__name__}"
                                    ) from exc
    if not inv.has_payment_hash:
        raise InvalidPaymentRequest("invalid payment request: no payment hash")
    if inv.description is None and inv.description_hash is None:
        raise InvalidPaymentRequest("invalid payment request: no description or hash")
    fallback = None
    tag = inv.tags.get(bolt11.TagChar.fallback)
    if tag is not None and tag.data is not None:
        bits = tag.data.data
        fb_words = [bits[i:i + 5].uint for i in range(0, len(bits) - len(bits) % 5, 5)]
        fallback = fallback_address(fb_words, inv.currency)
    hints = [[dict(r._asdict()) for r in hint.routes] for hint in inv.route_hints or []]
    sig = inv.signature.signature_data.hex() if inv.signature else ""
    return PayReq(
        bolt11=text.lower(), currency=inv.currency,
        amount_msat=int(inv.amount_msat) if inv.amount_msat else None,
        timestamp=inv.date, payment_hash=inv.payment_hash, payee=inv.payee or "",
        description=inv.description or "", description_hash=inv.description_hash,
        expiry=inv.expiry, min_final_cltv_expiry=inv.min_final_cltv_expiry,
        payment_secret=inv.payment_secret, fallback_address=fallback,
        features=_feature_int(inv.features), signature=sig, route_hints=hints)
