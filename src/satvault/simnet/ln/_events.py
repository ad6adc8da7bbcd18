"""Who hears about what: invoice listeners per node, payment listeners per (sender, hash),
and a condition for threads that block until something changes.

Used under the network's lock: ``emit_*`` call the listeners with a snapshot while the lock
is held, so a listener must only hand the event on (``loop.call_soon_threadsafe``, a queue).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from satvault.simnet.ln._model import Invoice, Payment

__all__ = ["EventHub", "InvoiceListener", "PaymentListener"]

InvoiceListener = Callable[[str, Invoice], None]  # ("added" | "settled" | "canceled", invoice)
PaymentListener = Callable[[Payment], None]


class EventHub:
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.changed = threading.Condition(lock)
        self._invoice: dict[str, dict[int, InvoiceListener]] = {}
        self._payment: dict[tuple[str, str], dict[int, PaymentListener]] = {}
        self._tokens = itertools.count(1)

    def on_invoice(self, node: str, listener: InvoiceListener) -> Callable[[], None]:
        """Register (call with the lock held); returns the unsubscribe function."""
        token = next(self._tokens)
        self._invoice.setdefault(node, {})[token] = listener

        def unsubscribe() -> None:
            with self._lock:
                self._invoice.get(node, {}).pop(token, None)

        return unsubscribe

    def invoice_listeners(self, node: str) -> int:
        return len(self._invoice.get(node, ()))

    def on_payment(self, sender: str, payment_hash: str, listener: PaymentListener
                   ) -> Callable[[], None]:
        key = (sender, payment_hash)
        token = next(self._tokens)
        self._payment.setdefault(key, {})[token] = listener

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._payment.get(key)
                if listeners is not None:
                    listeners.pop(token, None)
                    if not listeners:
                        del self._payment[key]

        return unsubscribe

    def emit_invoice(self, node: str, kind: str, inv: Invoice) -> None:
        listeners = self._invoice.get(node)
        if listeners:
            snap = inv.snapshot()
            for cb in list(listeners.values()):
                cb(kind, snap)
        self.changed.notify_all()

    def emit_payment(self, payment: Payment) -> None:
        listeners = self._payment.get((payment.sender, payment.payment_hash))
        if listeners:
            snap = payment.snapshot()
            for cb in list(listeners.values()):
                cb(snap)
        self.changed.notify_all()
