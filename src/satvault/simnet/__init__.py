"""simnet: the built-in Bitcoin regtest simulator.

A deterministic chain (``Chain``) with real transactions, blocks, a mempool with Bitcoin
Core's acceptance rules and a funded faucet, served over Bitcoin Core's JSON-RPC
(``SimnetServer``) so the ``bitcoind`` adapter is exercised over the wire exactly as against
a real node. ``satvault simnet …`` (``simnet.cli``) drives a running one from the shell.

::

    from satvault.simnet import Chain, SimnetServer

    with SimnetServer(Chain()) as node:          # 127.0.0.1, a free port
        txid = node.chain.pay("bcrt1q…", 50_000)  # or over RPC: simnet_pay
        node.chain.mine(1)
        node.url                                 # http://simnet:simnet@127.0.0.1:PORT/
"""

from satvault.simnet._accept import Policy
from satvault.simnet._faucet import FaucetBalance
from satvault.simnet.bip21 import Destination, parse_destination
from satvault.simnet.chain import DEFAULT_SEED, GENESIS_HASH, Chain
from satvault.simnet.errors import (
    ChainStateError,
    DecodeFailed,
    InsufficientFunds,
    InvalidAmount,
    InvalidDestination,
    SimnetError,
    TxRejected,
    UnknownTransaction,
)
from satvault.simnet.rpc import RpcError, SimnetServer

__all__ = [
    "DEFAULT_SEED",
    "GENESIS_HASH",
    "Chain",
    "ChainStateError",
    "DecodeFailed",
    "Destination",
    "FaucetBalance",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidDestination",
    "Policy",
    "RpcError",
    "SimnetError",
    "SimnetServer",
    "TxRejected",
    "UnknownTransaction",
    "parse_destination",
]
