"""Validating a BOLT11 invoice before any money is held: decodes (signature included, by the
``bolt11`` library), network prefix, expiry, amount."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import bolt11

from satvault.kernel.clock import unix_time
from satvault.lightning.errors import AmountRequired, InvalidInvoice, InvoiceExpired, WrongNetwork

__all__ = ["CheckedInvoice", "Decoded", "check_invoice", "decode"]

MAX_MSAT = 21_000_000 * 10**11
_PREFIX = {"mainnet": "bc", "testnet": "tb", "signet": "tbs", "regtest": "bcrt"}


@dataclass(frozen=True, slots=True)
class CheckedInvoice:
    bolt11: str
    payment_hash: str
    payee: str
    amount_msat: int  # what will be paid: the invoice's amount, or the one given
    invoice_amount_msat: int | None
    description: str | None
    description_hash: str | None
    expires_at: int
    hops: tuple[str, ...] = ()  # the nodes of its route hints (a private payee's way in)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a BOLT11 string says, signature checked; nothing about the present moment."""

    currency: str
    date: int
    expiry: int | None
    amount_msat: int | None
    payment_hash: str
    payee: str
    description: str | None
    description_hash: str | None
    hops: tuple[str, ...] = ()  # the nodes its route hints name, lower-case hex


@lru_cache(maxsize=4096)
def _decode(raw: str) -> Decoded:
    inv = bolt11.decode(raw)
    hops = tuple(dict.fromkeys(route.public_key.lower() for hint in inv.route_hints or ()
                               for route in hint.routes))
    return Decoded(inv.currency, int(inv.date), int(inv.expiry) if inv.expiry else None,
                   int(inv.amount_msat) if inv.amount_msat else None, inv.payment_hash,
                   inv.payee or "", inv.description, inv.description_hash, hops)


def decode(text: str) -> Decoded:
    """Decode (and check the signature of) a BOLT11 invoice, ``lightning:`` prefix allowed.
    Decoding costs milliseconds of pure Python and one request may look at the same string
    several times (before its unit of work, inside it, the payer later): the result of a
    string is remembered (4,096 strings); expiry is judged by :func:`check_invoice` each time."""
    raw = text.strip()
    if raw.lower().startswith("lightning:"):
        raw = raw[len("lightning:"):]
    try:
        return _decode(raw)
    except Exception as exc:  # the library raises assorted errors for malformed input
        raise InvalidInvoice(f"not a valid BOLT11 invoice: {exc}") from exc


def check_invoice(text: str, *, network: str, amount_msat: int | None = None,
                  now: float | None = None) -> CheckedInvoice:
    raw = text.strip()
    if raw.lower().startswith("lightning:"):
        raw = raw[len("lightning:"):]
    inv = decode(raw)
    want = _PREFIX[network]
    if inv.currency != want:
        raise WrongNetwork(f"this invoice is for the {inv.currency!r} network; this platform "
                           f"runs on {network} ({want!r})")
    expires_at = inv.date + (inv.expiry or 3600)
    if (unix_time() if now is None else now) >= expires_at:
        raise InvoiceExpired("this invoice has expired")
    invoice_amount = inv.amount_msat
    if invoice_amount is None:
        if amount_msat is None:
            raise AmountRequired("this invoice has no amount: give amount_msat")
        pay = amount_msat
    else:
        if amount_msat is not None and amount_msat != invoice_amount:
            raise AmountRequired(f"amount_msat {amount_msat} differs from the invoice's "
                                 f"{invoice_amount}")
        pay = invoice_amount
    if pay <= 0:
        raise AmountRequired("the amount must be positive")
    if pay > MAX_MSAT:
        raise InvalidInvoice("the amount is above 21 million BTC")
    return CheckedInvoice(raw.lower(), inv.payment_hash, inv.payee, pay, invoice_amount,
                          inv.description, inv.description_hash, expires_at, inv.hops)
