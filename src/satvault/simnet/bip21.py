"""Payment destinations: a regtest address, or a BIP21 URI ``bitcoin:ADDR?amount=…&label=…``.

The ``amount`` parameter is in BTC and is parsed as a decimal string (never a float); it
must be a whole number of satoshis. An explicit ``amount_sat`` overrides it. Unknown
``req-`` parameters make the URI invalid, as BIP21 requires; other unknown parameters
(``lightning=``, ``pj=`` …) are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from satvault.onchain.bip21 import parse_bip21
from satvault.onchain.errors import InvalidPaymentUri
from satvault.simnet._primitives import COIN, MAX_MONEY
from satvault.simnet._script import address_to_spk
from satvault.simnet.errors import InvalidAmount, InvalidDestination

__all__ = ["Destination", "btc_to_sat", "parse_destination"]

_AMOUNT_RE = re.compile(r"^[0-9]*(\.[0-9]*)?$")


@dataclass(frozen=True)
class Destination:
    address: str
    spk: bytes
    amount_sat: int | None
    label: str | None = None
    message: str | None = None


def btc_to_sat(text: str | Decimal) -> int:
    """An exact BTC amount ("0.001") in satoshis; InvalidAmount if not whole satoshis."""
    if isinstance(text, Decimal):
        value = text
    else:
        if not _AMOUNT_RE.match(text) or text in ("", "."):
            raise InvalidAmount(f"Invalid amount: {text!r}")
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise InvalidAmount(f"Invalid amount: {text!r}") from exc
    if not value.is_finite():
        raise InvalidAmount(f"Invalid amount: {text!r}")
    sat = value * COIN
    if sat != sat.to_integral_value():
        raise InvalidAmount(f"Invalid amount (more than 8 decimals): {text!r}")
    return int(sat)


def check_amount(amount_sat: object) -> int:
    if isinstance(amount_sat, bool) or not isinstance(amount_sat, int):
        raise InvalidAmount(f"Invalid amount: {amount_sat!r} (an integer of satoshis)")
    if amount_sat <= 0 or amount_sat > MAX_MONEY:
        raise InvalidAmount("Amount out of range")
    return amount_sat


def parse_destination(destination: str, amount_sat: int | None = None) -> Destination:
    """Parse an address or BIP21 URI; ``amount_sat`` (if given) wins over ``amount=``.
    URIs are read by the platform's own parser (:mod:`satvault.onchain.bip21`), so the
    simulator and the platform agree on what a payment URI means."""
    text = destination.strip()
    label = message = None
    uri_amount: int | None = None
    if text[:8].lower() == "bitcoin:":
        try:
            uri = parse_bip21(text)
        except InvalidPaymentUri as exc:
            raise (InvalidAmount if "amount" in str(exc) else InvalidDestination)(
                f"Invalid BIP21 URI: {exc}") from exc
        address, uri_amount, label, message = uri.address, uri.amount_sat, uri.label, uri.message
    else:
        address = text
    if address[:5].upper() == "BCRT1":
        address = address.lower()
    spk = address_to_spk(address)
    amount = amount_sat if amount_sat is not None else uri_amount
    if amount is not None:
        amount = check_amount(amount)
    return Destination(address, spk, amount, label, message)
