"""Fakes for the LNURL tests: real BOLT11 invoices signed with throwaway keys, and a minimal
in-memory :class:`~satvault.backends.lightning.LightningBackend` (stands in until the
Lightning simulator is ready)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import bolt11
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from coincurve import PrivateKey

from satvault.backends.lightning import (
    DecodedInvoice,
    Invoice,
    InvoiceState,
    LightningBalances,
    NodeInfo,
    PaymentResult,
    PaymentStatus,
)

# The preimage of every payment hash these fakes made up: a payment of one succeeds with it,
# as a node's would (satvault books a success only with the hash's preimage).
PREIMAGES: dict[str, str] = {}


def new_payment_hash() -> str:
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).hexdigest()
    PREIMAGES[payment_hash] = preimage.hex()
    return payment_hash


def make_bolt11(amount_msat: int | None, *, description_hash: str | bytes | None = None,
                description: str | None = None, currency: str = "bcrt",
                key: PrivateKey | None = None, payment_hash: str | None = None,
                expiry: int = 3600) -> str:
    """A signed BOLT11 invoice; ``description`` ("d") unless ``description_hash`` ("h")."""
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash or new_payment_hash())
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    if description_hash is not None:
        h = description_hash.hex() if isinstance(description_hash, bytes) else description_hash
        tags.add(TagChar.description_hash, h)
    else:
        tags.add(TagChar.description, description or "test")
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, 18)
    invoice = Bolt11(currency=currency, date=int(time.time()), tags=tags,
                     amount_msat=MilliSatoshi(amount_msat) if amount_msat else None)
    return bolt11.encode(invoice, (key or PrivateKey()).secret.hex())


class FakeLightning:
    """Invoices it issues are real BOLT11 strings signed by its node key; payments succeed
    at once with ``fee_msat`` unless ``fail_with`` names a failure reason."""

    name = "fake"

    def __init__(self, *, fee_msat: int = 0) -> None:
        self.key = PrivateKey()
        self.invoices: dict[str, Invoice] = {}
        self.payments: dict[str, PaymentResult] = {}
        self.paid: list[str] = []
        self.fee_msat = fee_msat
        self.fail_with: str | None = None

    async def get_info(self) -> NodeInfo:
        return NodeInfo(self.key.public_key.format().hex(), "fake", "regtest", 100, True)

    async def create_invoice(self, amount_msat: int | None, *, memo: str = "",
                             hashed_description: str | None = None, expiry: int = 3600,
                             fallback_address: str | None = None) -> Invoice:
        payment_hash = new_payment_hash()
        preimage = bytes.fromhex(PREIMAGES[payment_hash])
        description_hash = (None if hashed_description is None else
                            hashlib.sha256(hashed_description.encode()).digest())
        text = make_bolt11(amount_msat, description_hash=description_hash,
                           description=None if description_hash else (memo or "fake"),
                           key=self.key, payment_hash=payment_hash, expiry=expiry)
        inv = Invoice(payment_hash, text, amount_msat, InvoiceState.OPEN,
                      add_index=len(self.invoices) + 1, preimage=preimage.hex())
        self.invoices[payment_hash] = inv
        return inv

    async def lookup_invoice(self, payment_hash: str) -> Invoice | None:
        return self.invoices.get(payment_hash)

    async def cancel_invoice(self, payment_hash: str) -> None:
        inv = self.invoices.get(payment_hash)
        if inv is not None:
            self.invoices[payment_hash] = replace(inv, state=InvoiceState.CANCELED)

    async def subscribe_invoices(self, *, add_index: int = 0, settle_index: int = 0
                                 ) -> AsyncIterator[Invoice]:
        for inv in ():
            yield inv

    async def pay(self, bolt11_text: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult:
        inv = bolt11.decode(bolt11_text)
        msat = amount_msat or int(inv.amount_msat or 0)
        self.paid.append(bolt11_text)
        if self.fail_with:
            result = PaymentResult(inv.payment_hash, PaymentStatus.FAILED, msat,
                                   failure_reason=self.fail_with)
        else:
            result = PaymentResult(inv.payment_hash, PaymentStatus.SUCCEEDED, msat,
                                   fee_msat=self.fee_msat,
                                   preimage=PREIMAGES.get(inv.payment_hash))
        self.payments[inv.payment_hash] = result
        return result

    async def track_payment(self, payment_hash: str) -> PaymentResult | None:
        return self.payments.get(payment_hash)

    async def decode(self, bolt11_text: str) -> DecodedInvoice:
        inv = bolt11.decode(bolt11_text)
        return DecodedInvoice(inv.payment_hash, inv.payee or "",
                              int(inv.amount_msat) if inv.amount_msat else None,
                              inv.description or "", inv.description_hash, inv.date,
                              inv.expiry, "regtest")

    async def balances(self) -> LightningBalances:
        return LightningBalances(10**12, 10**12, 0)

    async def close(self) -> None:
        return None
