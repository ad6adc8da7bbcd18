"""simnet.ln: the built-in Lightning simulator.

A deterministic in-memory network (``LnNetwork``: nodes with real keys, channels with
liquidity, real signed BOLT #11 invoices, routing fees, scriptable payment outcomes), served
as LND's REST API (``LndRestServer``) and as Core Lightning's JSON-RPC socket
(``ClnRpcServer``), so the ``lnd`` adapter and pyln-client are exercised over the wire.
``satvault simnet ln-…`` (``simnet.ln.cli``) drives a running one from the shell.

::

    from satvault.simnet.ln import LnNetwork, LndRestServer

    net = LnNetwork()
    with LndRestServer(net, macaroon_hex="ab" * 32) as lnd:   # 127.0.0.1, a free port
        inv = net.create_invoice("platform", 150_000, memo="order 42")
        net.pay("customer2", inv.bolt11)                      # via the router, 1150 msat fee
        net.script_next("platform", "hang_then_succeed", delay=2.0)
"""

from satvault.simnet.ln._bolt11 import PayReq
from satvault.simnet.ln._model import (
    ChannelSpec,
    FailureReason,
    Invoice,
    InvoiceState,
    NodeBalance,
    Payment,
    PaymentStatus,
)
from satvault.simnet.ln.cln_rpc import ClnRpcServer
from satvault.simnet.ln.errors import (
    DuplicateInvoice,
    InvalidPaymentRequest,
    InvoiceError,
    InvoiceNotOpen,
    LnSimError,
    PaymentRefused,
    UnknownInvoice,
    UnknownNode,
    UnknownPayment,
)
from satvault.simnet.ln.lnd_rest import LndRestServer
from satvault.simnet.ln.network import DEFAULT_CHANNELS, DEFAULT_NODES, DEFAULT_SEED, LnNetwork

__all__ = [
    "DEFAULT_CHANNELS",
    "DEFAULT_NODES",
    "DEFAULT_SEED",
    "ChannelSpec",
    "ClnRpcServer",
    "DuplicateInvoice",
    "FailureReason",
    "InvalidPaymentRequest",
    "Invoice",
    "InvoiceError",
    "InvoiceNotOpen",
    "InvoiceState",
    "LnNetwork",
    "LnSimError",
    "LndRestServer",
    "NodeBalance",
    "PayReq",
    "Payment",
    "PaymentRefused",
    "PaymentStatus",
    "UnknownInvoice",
    "UnknownNode",
    "UnknownPayment",
]
