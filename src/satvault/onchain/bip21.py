"""BIP21 payment URIs: ``bitcoin:ADDR?amount=0.0015&label=…&message=…&lightning=BOLT11``.

Amounts are BTC decimal strings made from integer satoshis by string arithmetic, never floats.
On-chain amounts are whole satoshis, so an msat amount is rounded *up* to the next satoshi
(the payer covers the fraction, never the merchant). Parsing refuses unknown ``req-``
parameters, as BIP21 requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from satvault.amounts import InvalidAmount, parse_decimal
from satvault.onchain.errors import InvalidPaymentUri

__all__ = ["PaymentUri", "format_btc", "make_bip21", "msat_to_sat_ceil", "parse_bip21"]

SAT_PER_BTC = 100_000_000
MAX_SAT = 21_000_000 * SAT_PER_BTC


def msat_to_sat_ceil(msat: int) -> int:
    return -(-msat // 1000)


def format_btc(sat: int) -> str:
    """Satoshis as a BTC decimal string without trailing zeros: 150000 → "0.0015"."""
    whole, frac = divmod(sat, SAT_PER_BTC)
    text = f"{whole}.{frac:08d}".rstrip("0").rstrip(".")
    return text


def make_bip21(address: str, *, amount_sat: int | None = None, label: str | None = None,
               message: str | None = None, lightning: str | None = None) -> str:
    params = []
    if amount_sat is not None:
        params.append(f"amount={format_btc(amount_sat)}")
    if label:
        params.append(f"label={quote(label, safe='')}")
    if message:
        params.append(f"message={quote(message, safe='')}")
    if lightning:
        params.append(f"lightning={lightning.upper()}")
    # Upper-case bech32 addresses make denser QR codes (alphanumeric mode); both are valid.
    addr = address.upper() if address.lower().startswith(("bc1", "tb1", "bcrt1")) else address
    return f"bitcoin:{addr}" + ("?" + "&".join(params) if params else "")


@dataclass(frozen=True, slots=True)
class PaymentUri:
    address: str
    amount_sat: int | None = None
    label: str | None = None
    message: str | None = None
    lightning: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_bip21(uri: str) -> PaymentUri:
    text = uri.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() != "bitcoin":
        raise InvalidPaymentUri("a payment URI starts with 'bitcoin:'")
    address, _, query = rest.partition("?")
    if not address:
        raise InvalidPaymentUri("the URI has no address")
    if address.upper() == address:
        address = address.lower() if address.lower().startswith(("bc1", "tb1", "bcrt1")) \
            else address
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        k = key.lower()
        if k in values:
            raise InvalidPaymentUri(f"parameter {k!r} appears twice")
        values[k] = value
    amount_sat = None
    if "amount" in values:
        try:
            # BIP21 writes amounts as digits with an optional '.' and at most 8 decimals.
            amount_sat = parse_decimal(values.pop("amount"), places=8)
        except InvalidAmount as exc:
            raise InvalidPaymentUri(f"amount: {exc}") from exc
        if amount_sat <= 0:
            raise InvalidPaymentUri("amount must be positive")
        if amount_sat > MAX_SAT:
            raise InvalidPaymentUri("amount exceeds 21 million BTC")
    unknown_required = [k for k in values if k.startswith("req-")]
    if unknown_required:
        raise InvalidPaymentUri(f"unsupported required parameter(s): {unknown_required}")
    return PaymentUri(address, amount_sat, values.pop("label", None),
                      values.pop("message", None), values.pop("lightning", None), values)
