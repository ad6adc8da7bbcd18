"""A deterministic in-memory Lightning network.

Named nodes, each with a secp256k1 key derived from the seed, joined by channels whose
liquidity moves as payments settle. The default picture::

    customer1 ──── router ("charlie") ──── platform
        │            │                        │
        │         customer2                   │
        └──────────── direct channel ─────────┘

Nodes issue real BOLT #11 invoices (signed with the node key, decodable by ``bolt11``);
preimages come from the seed, so a run is reproducible apart from timestamps. A payment finds
a path (a direct channel, else one intermediate node), checks liquidity and the fee limit,
pays the intermediate its fee (``base + amount·ppm/10⁶``, rounded down; 1000 msat + 1000 ppm
by default), and the receiver checks its invoice (open, unexpired, amount between the
invoice amount and twice it) before settling. The sender records the payment (hash, value,
fee, preimage, status, failure reason) and refuses a second payment of a hash that is in
flight ("payment is in transition") or paid ("invoice is already paid"), as LND does.

Tests steer payments with :meth:`LnNetwork.script` (one payment hash) or
:meth:`LnNetwork.script_next` (the next payment a node sends): ``succeed``,
``fail:no_route``, ``fail:insufficient_balance``, ``fail:incorrect_payment_details``,
``fail:timeout``, ``fail:error``, ``in_flight`` (until :meth:`LnNetwork.resolve`) and
``hang_then_succeed`` (the sender sees IN_FLIGHT and then nothing, while the payment succeeds
``delay`` seconds later — the LNbits CVE-2024-34694 scenario). ``delay`` keeps any outcome in
flight that long first.

Thread-safe: one lock guards the whole network. Listeners registered with
:meth:`subscribe_invoices` and :meth:`watch_payment` are called under that lock and must only
hand the event on (``loop.call_soon_threadsafe``, a queue); they must not call back in.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from coincurve import PrivateKey

from satvault.simnet.ln import _bolt11
from satvault.simnet.ln._bolt11 import PayReq
from satvault.simnet.ln._events import EventHub, InvoiceListener, PaymentListener
from satvault.simnet.ln._model import (
    Channel,
    ChannelSpec,
    FailureReason,
    Hop,
    Invoice,
    InvoiceState,
    NodeBalance,
    Outcome,
    Payment,
    PaymentStatus,
    parse_outcome,
)
from satvault.simnet.ln._routing import find_route, hold, release
from satvault.simnet.ln._state import (
    DEFAULT_ALIASES,
    DEFAULT_CHANNELS,
    DEFAULT_NODES,
    DEFAULT_ONCHAIN_SAT,
    DEFAULT_SEED,
    MAX_MEMO,
    NodeState,
)
from satvault.simnet.ln.errors import (
    DuplicateInvoice,
    InvalidPaymentRequest,
    InvoiceNotOpen,
    LnSimError,
    PaymentRefused,
    UnknownInvoice,
    UnknownNode,
    UnknownPayment,
)

__all__ = [
    "DEFAULT_CHANNELS",
    "DEFAULT_NODES",
    "DEFAULT_SEED",
    "MAX_MEMO",
    "InvoiceListener",
    "LnNetwork",
    "PaymentListener",
]


def _seed_bytes(seed: str | bytes) -> bytes:
    return seed.encode() if isinstance(seed, str) else bytes(seed)


class LnNetwork:
    """The simulated network. See the module docstring."""

    def __init__(self, *, seed: str | bytes = DEFAULT_SEED, network: str = "regtest",
                 nodes: Sequence[str] = DEFAULT_NODES,
                 channels: Iterable[ChannelSpec] = DEFAULT_CHANNELS,
                 aliases: dict[str, str] | None = None,
                 onchain_sat: dict[str, int] | None = None, block_height: int = 200,
                 clock: Callable[[], float] = time.time) -> None:
        if network not in _bolt11.CURRENCIES:
            raise LnSimError(f"unknown network {network!r}")
        self.seed = _seed_bytes(seed)
        self.network = network
        self.currency = _bolt11.CURRENCIES[network]
        self.block_height = block_height
        self._clock = clock
        self._offset = 0.0
        self._unsynced: set[str] = set()
        self._lock = threading.RLock()
        self._events = EventHub(self._lock)
        aliases = {**DEFAULT_ALIASES, **(aliases or {})}
        onchain = {**DEFAULT_ONCHAIN_SAT, **(onchain_sat or {})}
        self._nodes: dict[str, NodeState] = {}
        for name in nodes:
            key = PrivateKey(self._derive(f"node-key/{name}"))
            self._nodes[name] = NodeState(name, key, aliases.get(name, name), onchain.get(name, 0))
        self._by_pubkey = {n.pubkey: n.name for n in self._nodes.values()}
        self._channels: list[Channel] = []
        for i, spec in enumerate(channels):
            for name in (spec.a, spec.b):
                self._node(name)
            chan_id = (block_height - 100 + i) << 40 | (1 << 16)
            self._channels.append(Channel(chan_id, spec.a, spec.b,
                                          {spec.a: spec.a_msat, spec.b: spec.b_msat},
                                          {spec.a: 0, spec.b: 0}))
        self._requests: dict[str, PayReq] = {}  # our own invoices, by bolt11
        self._scripts: dict[str, Outcome] = {}
        self._next: dict[str, deque[Outcome]] = {}
        self._timers: set[threading.Timer] = set()
        self._closed = False

    # ---------------------------------------------------------------------------- basics
    def _derive(self, label: str) -> bytes:
        return hmac.new(self.seed, label.encode(), hashlib.sha256).digest()

    def _node(self, name: str) -> NodeState:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNode(f"no node named {name!r}") from None

    def now(self) -> float:
        return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the network's clock forward (invoice expiry is judged by it)."""
        with self._lock:
            self._offset += seconds

    def set_synced(self, node: str, synced: bool) -> None:
        """Make ``node`` report that it is (not) synced to the chain in its getinfo (LND's
        ``synced_to_chain``, Core Lightning's sync warnings); nothing else changes."""
        self._node(node)
        with self._lock:
            (self._unsynced.discard if synced else self._unsynced.add)(node)

    def synced(self, node: str) -> bool:
        return node not in self._unsynced

    @property
    def node_names(self) -> list[str]:
        return list(self._nodes)

    def pubkey(self, node: str) -> str:
        return self._node(node).pubkey

    def alias(self, node: str) -> str:
        return self._node(node).alias

    def node_by_pubkey(self, pubkey: str) -> str | None:
        return self._by_pubkey.get(pubkey.lower())

    def private_key(self, node: str) -> PrivateKey:
        return self._node(node).key

    def close(self) -> None:
        """Cancel pending timers (delayed outcomes stay in flight)."""
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, set()
        for t in timers:
            t.cancel()

    # -------------------------------------------------------------------------- channels
    def channels(self, node: str | None = None) -> list[Channel]:
        with self._lock:
            return [Channel(c.chan_id, c.a, c.b, dict(c.balance), dict(c.pending))
                    for c in self._channels if node is None or node in (c.a, c.b)]

    def balance(self, node: str) -> NodeBalance:
        with self._lock:
            n = self._node(node)
            local = remote = pend_local = pend_remote = 0
            for c in self._channels:
                if node not in (c.a, c.b):
                    continue
                peer = c.peer(node)
                local += c.balance[node]
                remote += c.balance[peer]
                pend_local += c.pending[node]
                pend_remote += c.pending[peer]
            return NodeBalance(node, n.pubkey, local, remote, pend_local, pend_remote,
                               n.onchain_sat)

    def peers(self, node: str) -> list[str]:
        with self._lock:
            return sorted({c.peer(node) for c in self._channels if node in (c.a, c.b)})

    # -------------------------------------------------------------------------- invoices
    def create_invoice(self, node: str, amount_msat: int | None = None, *, memo: str = "",
                       description_hash: bytes | None = None, expiry: int = 3600,
                       cltv_expiry: int = 80, fallback_addr: str | None = None,
                       label: str | None = None, preimage: bytes | None = None) -> Invoice:
        """Issue a signed invoice; ``amount_msat`` None or 0 makes it amountless."""
        if amount_msat is not None and amount_msat < 0:
            raise LnSimError("amount must not be negative", kind="invalid_amount")
        if expiry <= 0:
            raise LnSimError("expiry must be positive", kind="invalid_expiry")
        fallback = (_bolt11.fallback_words(fallback_addr, self.currency)
                    if fallback_addr else None)
        with self._lock:
            n = self._node(node)
            n.next_secret += 1
            counter = n.next_secret
            if label is not None and label in n.labels:
                raise DuplicateInvoice(f"Duplicate label '{label}'")
        if preimage is None:
            preimage = self._derive(f"preimage/{node}/{counter}")
        payment_hash = hashlib.sha256(preimage).digest()
        payment_addr = self._derive(f"payment-addr/{node}/{counter}")
        created = int(self.now())
        amount = amount_msat or None
        text = _bolt11.encode(
            key=n.key, currency=self.currency, amount_msat=amount, timestamp=created,
            payment_hash=payment_hash, payment_secret=payment_addr,
            description=None if description_hash is not None else memo,
            description_hash=description_hash, expiry=expiry,
            min_final_cltv_expiry=cltv_expiry, fallback=fallback)
        h = payment_hash.hex()
        with self._lock:
            if h in n.invoices:
                raise DuplicateInvoice("invoice with payment hash already exists")
            label = h if label is None else label
            if label in n.labels:
                raise DuplicateInvoice(f"Duplicate label '{label}'")
            n.add_index += 1
            inv = Invoice(node=node, payment_hash=h, preimage=preimage.hex(),
                          payment_addr=payment_addr.hex(), bolt11=text, amount_msat=amount,
                          memo=memo,
                          description_hash=description_hash.hex() if description_hash else None,
                          created_at=created, expiry=expiry, cltv_expiry=cltv_expiry,
                          fallback_addr=fallback_addr, add_index=n.add_index, label=label)
            n.invoices[h] = inv
            n.labels[label] = h
            self._requests[text] = PayReq(
                bolt11=text, currency=self.currency, amount_msat=amount, timestamp=created,
                payment_hash=h, payee=n.pubkey,
                description="" if description_hash is not None else memo,
                description_hash=inv.description_hash, expiry=expiry,
                min_final_cltv_expiry=cltv_expiry, payment_secret=inv.payment_addr,
                fallback_address=fallback_addr, features=_bolt11.FEATURES_DEFAULT)
            self._events.emit_invoice(node, "added", inv)
            return inv.snapshot()

    def lookup_invoice(self, node: str, payment_hash: str) -> Invoice | None:
        with self._lock:
            inv = self._node(node).invoices.get(payment_hash.lower())
            return None if inv is None else inv.snapshot()

    def invoice_by_label(self, node: str, label: str) -> Invoice | None:
        with self._lock:
            n = self._node(node)
            h = n.labels.get(label)
            return None if h is None else n.invoices[h].snapshot()

    def invoices(self, node: str) -> list[Invoice]:
        with self._lock:
            return [inv.snapshot() for inv in self._node(node).invoices.values()]

    def settled_after(self, node: str, settle_index: int) -> Invoice | None:
        """The first invoice settled with a settle index above ``settle_index``."""
        with self._lock:
            n = self._node(node)
            for h in n.settled[max(settle_index, 0):]:
                inv = n.invoices.get(h)
                if inv is not None:
                    return inv.snapshot()
            return None

    def cancel_invoice(self, node: str, payment_hash: str) -> Invoice:
        """OPEN -> CANCELED (idempotent on CANCELED; a settled invoice stays settled)."""
        with self._lock:
            inv = self._node(node).invoices.get(payment_hash.lower())
            if inv is None:
                raise UnknownInvoice("unable to locate invoice")
            if inv.state is InvoiceState.SETTLED:
                raise InvoiceNotOpen("invoice already settled")
            if inv.state is not InvoiceState.CANCELED:
                inv.state = InvoiceState.CANCELED
                self._events.emit_invoice(node, "canceled", inv)
            return inv.snapshot()

    def delete_invoice(self, node: str, payment_hash: str) -> Invoice:
        """Forget an invoice (Core Lightning's delinvoice); paying it then fails."""
        with self._lock:
            n = self._node(node)
            inv = n.invoices.pop(payment_hash.lower(), None)
            if inv is None:
                raise UnknownInvoice("Unknown invoice")
            n.labels.pop(inv.label, None)
            return inv

    def subscribe_invoices(self, node: str, listener: InvoiceListener, *, add_index: int = 0,
                           settle_index: int = 0
                           ) -> tuple[list[tuple[str, Invoice]], Callable[[], None]]:
        """LND's catch-up, then live events: the backlog holds ("added", invoice) for every
        invoice with an add index above ``add_index`` and then ("settled", invoice) for every
        settle index above ``settle_index`` (0 means none, as in LND), each in its current
        state; ``listener`` then gets every later event. Returns (backlog, unsubscribe)."""
        with self._lock:
            n = self._node(node)
            backlog: list[tuple[str, Invoice]] = []
            if add_index > 0:
                backlog += [("added", inv.snapshot()) for inv in n.invoices.values()
                            if inv.add_index > add_index]
            if settle_index > 0:
                for h in n.settled[settle_index:]:
                    inv = n.invoices.get(h)
                    if inv is not None:
                        backlog.append(("settled", inv.snapshot()))
            unsubscribe = self._events.on_invoice(node, listener)
        return backlog, unsubscribe

    def invoice_subscribers(self, node: str) -> int:
        """How many invoice streams follow ``node`` now (a test waits for its listener to
        be subscribed instead of sleeping)."""
        with self._lock:
            return self._events.invoice_listeners(node)

    # -------------------------------------------------------------------------- decoding
    def decode(self, bolt11: str) -> PayReq:
        text = bolt11.strip()
        if text.lower().startswith("lightning:"):
            text = text[10:]
        text = text.lower()
        req = self._requests.get(text)
        return req if req is not None else _bolt11.decode(text)

    # -------------------------------------------------------------------------- scripting
    def script(self, payment_hash: str, outcome: str, *, delay: float = 0.0) -> None:
        """The next payment of ``payment_hash`` (from any node) ends with ``outcome``."""
        parsed = parse_outcome(outcome, delay)
        with self._lock:
            self._scripts[payment_hash.lower()] = parsed

    def script_next(self, sender: str, outcome: str, *, delay: float = 0.0) -> None:
        """The next payment ``sender`` makes ends with ``outcome`` (queued, first in first
        out; a per-hash script wins over this queue)."""
        parsed = parse_outcome(outcome, delay)
        with self._lock:
            self._node(sender)
            self._next.setdefault(sender, deque()).append(parsed)

    def _take_outcome(self, sender: str, payment_hash: str) -> Outcome:
        scripted = self._scripts.pop(payment_hash, None)
        if scripted is not None:
            return scripted
        queue = self._next.get(sender)
        if queue:
            return queue.popleft()
        return Outcome("succeed")

    # -------------------------------------------------------------------------- payments
    def pay(self, sender: str, bolt11: str, *, amount_msat: int | None = None,
            fee_limit_msat: int | None = None, label: str = "") -> Payment:
        """Send a payment; returns its record (IN_FLIGHT when scripted to wait).

        ``amount_msat`` is required for an amountless invoice; for one with an amount it
        overrides it (paying less than asked fails at the receiver, as a real underpayment
        would). ``fee_limit_msat`` None means no limit. Raises :class:`PaymentRefused`
        (nothing was sent) for an expired or foreign-network invoice, a missing amount, a
        self-payment, and a hash this node has in flight or already paid.
        """
        req = self.decode(bolt11)
        with self._lock:
            node = self._node(sender)
            if req.currency != self.currency:
                raise PaymentRefused(f"invoice not for current active network '{self.network}'",
                                     kind="wrong_network")
            now = self.now()
            if now > req.expires_at:
                until = datetime.fromtimestamp(req.expires_at, UTC).isoformat()
                raise PaymentRefused(f"invoice expired. Valid until {until}", kind="expired")
            if amount_msat is not None and amount_msat < 0:
                raise PaymentRefused("amount must not be negative", kind="invalid_amount")
            if req.amount_msat is None and not amount_msat:
                raise PaymentRefused("amount must be specified when paying a zero amount "
                                     "invoice", kind="amount_required")
            amount = amount_msat or req.amount_msat or 0
            dest = self._by_pubkey.get(req.payee)
            if dest == sender:
                raise PaymentRefused("self-payments not allowed", kind="self_payment")
            existing = node.payments.get(req.payment_hash)
            if existing is not None and existing.status is PaymentStatus.SUCCEEDED:
                raise PaymentRefused("invoice is already paid", kind="already_paid")
            if existing is not None and existing.status is PaymentStatus.IN_FLIGHT:
                raise PaymentRefused("payment is in transition", kind="in_transition")
            outcome = self._take_outcome(sender, req.payment_hash)
            node.payment_index += 1
            payment = Payment(sender=sender, payment_hash=req.payment_hash, bolt11=req.bolt11,
                              destination=req.payee, value_msat=amount,
                              created_ns=int(now * 1e9), payment_index=node.payment_index,
                              outcome=outcome.text, label=label,
                              description=req.description)
            node.payments[req.payment_hash] = payment
            if dest is None:
                payment.route_failure = FailureReason.NO_ROUTE
            else:
                found = self._find_route(sender, dest, amount, fee_limit_msat)
                if isinstance(found, FailureReason):
                    payment.route_failure = found
                else:
                    payment.route, payment.fee_msat = found
            self._start(payment, outcome)
            return payment.snapshot()

    def _find_route(self, src: str, dst: str, amount: int, fee_limit: int | None
                    ) -> tuple[tuple[Hop, ...], int] | FailureReason:
        fees = {n.name: (n.fee_base_msat, n.fee_ppm) for n in self._nodes.values()}
        return find_route(self._channels, fees, src, dst, amount, fee_limit)

    def _start(self, payment: Payment, outcome: Outcome) -> None:
        if outcome.delay == 0 and outcome.kind == "fail":
            self._fail(payment, outcome.failure)
            return
        if outcome.delay == 0 and outcome.kind in ("succeed", "forge"):
            self._complete(payment, forge=outcome.forged)
            return
        if payment.route_failure is FailureReason.NONE:
            self._reserve(payment)
        payment.stalled = outcome.kind == "hang_then_succeed"
        self._events.emit_payment(payment)
        if outcome.kind != "in_flight":
            self._schedule(outcome, payment)

    def _schedule(self, outcome: Outcome, payment: Payment) -> None:
        key = (payment.sender, payment.payment_hash, payment.payment_index)

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                p = self._nodes[key[0]].payments.get(key[1])
                if p is None or p.payment_index != key[2] or p.final:
                    return
                if outcome.kind == "fail":
                    self._fail(p, outcome.failure)
                else:
                    self._complete(p, forge=outcome.forged)

        timer = threading.Timer(outcome.delay, fire)
        timer.daemon = True
        if not self._closed:
            self._timers.add(timer)
            timer.start()

    def _reserve(self, payment: Payment) -> None:
        hold(self._channels, payment.route)
        payment.reserved = True

    def _release(self, payment: Payment, *, settle: bool) -> None:
        if payment.reserved:
            release(self._channels, payment.route, settle=settle)
            payment.reserved = False

    def _complete(self, payment: Payment, *, forge: str = "") -> None:
        """The natural end: routing's verdict, then the receiver's invoice checks; with
        ``forge``, a success the sender's node then reports falsely (the money moved as
        reported before the lie: :data:`~._model.FORGERIES`)."""
        if payment.route_failure is not FailureReason.NONE:
            self._fail(payment, payment.route_failure)
            return
        if not payment.reserved:
            self._reserve(payment)  # the route found at dispatch, under this same lock
        dest = self._nodes[self._by_pubkey[payment.destination]]
        inv = dest.invoices.get(payment.payment_hash)
        amount = payment.value_msat
        if (inv is None or inv.state is not InvoiceState.OPEN or inv.expired(self.now())
                or (inv.amount_msat is not None
                    and not inv.amount_msat <= amount <= 2 * inv.amount_msat)):
            self._fail(payment, FailureReason.INCORRECT_PAYMENT_DETAILS)
            return
        self._release(payment, settle=True)
        dest.settle_index += 1
        inv.state = InvoiceState.SETTLED
        inv.settle_index = dest.settle_index
        inv.amt_paid_msat = amount
        inv.settled_at = int(self.now())
        inv.htlc_chan_id = payment.route[-1].chan_id if payment.route else 0
        dest.settled.append(inv.payment_hash)
        self._events.emit_invoice(dest.name, "settled", inv)
        payment.status = PaymentStatus.SUCCEEDED
        payment.preimage = inv.preimage
        payment.resolved_ns = int(self.now() * 1e9)
        if forge == "preimage":
            payment.preimage = "11" * 32
        elif forge == "fee":
            payment.fee_msat = -(payment.value_msat * 9 // 10)
        elif forge == "amount":
            payment.value_msat *= 10
        self._events.emit_payment(payment)

    def _fail(self, payment: Payment, reason: FailureReason) -> None:
        self._release(payment, settle=False)
        payment.status = PaymentStatus.FAILED
        payment.failure_reason = reason
        payment.preimage = None
        payment.resolved_ns = int(self.now() * 1e9)
        self._events.emit_payment(payment)

    def resolve(self, payment_hash: str, outcome: str, *, sender: str | None = None
                ) -> Payment:
        """End an in-flight payment now: ``succeed`` (naturally) or ``fail:<reason>``."""
        parsed = parse_outcome(outcome)
        if parsed.kind not in ("succeed", "fail"):
            raise LnSimError("resolve with 'succeed' or 'fail:<reason>'",
                             kind="invalid_outcome")
        with self._lock:
            h = payment_hash.lower()
            found = [n.payments[h] for n in self._nodes.values()
                     if h in n.payments and (sender is None or n.name == sender)
                     and not n.payments[h].final]
            if not found:
                raise UnknownPayment(f"no payment {h} in flight")
            p = found[0]
            if parsed.kind == "fail":
                self._fail(p, parsed.failure)
            else:
                self._complete(p)
            return p.snapshot()

    def payment(self, sender: str, payment_hash: str) -> Payment | None:
        with self._lock:
            p = self._node(sender).payments.get(payment_hash.lower())
            return None if p is None else p.snapshot()

    def payments(self, sender: str) -> list[Payment]:
        with self._lock:
            return sorted((p.snapshot() for p in self._node(sender).payments.values()),
                          key=lambda p: p.payment_index)

    def watch_payment(self, sender: str, payment_hash: str, listener: PaymentListener
                      ) -> tuple[Payment | None, Callable[[], None]]:
        """(current record or None, unsubscribe); ``listener`` gets every later change."""
        key = (sender, payment_hash.lower())
        with self._lock:
            current = self._node(sender).payments.get(key[1])
            unsubscribe = self._events.on_payment(key[0], key[1], listener)
        return (None if current is None else current.snapshot()), unsubscribe

    def wait_payment(self, sender: str, payment_hash: str, *, timeout: float = 5.0
                     ) -> Payment:
        """Block until the payment is final (or ``timeout``); returns its record."""
        h = payment_hash.lower()
        with self._events.changed:
            node = self._node(sender)
            self._events.changed.wait_for(lambda: h in node.payments and node.payments[h].final,
                                timeout)
            p = node.payments.get(h)
            if p is None:
                raise UnknownPayment(f"{sender} has no payment {h}")
            return p.snapshot()

    def require_valid_request(self, bolt11: str) -> PayReq:
        """Decode, raising :class:`InvalidPaymentRequest` for foreign networks too."""
        req = self.decode(bolt11)
        if req.currency != self.currency:
            raise InvalidPaymentRequest(
                f"invoice not for current active network '{self.network}'")
        return req
