"""The ``simnet_*`` control methods: drive the chain and its faucet over the same JSON-RPC
endpoint (pay, mine, reorg, replace, double-spend, fee estimate, warm-up, sync state, the chain it
claims to be, whether it keeps a transaction index, faucet balance)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from satvault.simnet._params import (
    RPC_INVALID_PARAMETER,
    RpcContext,
    RpcError,
    bool_,
    feerate_param,
    hash_,
    int_,
    str_,
    type_error,
)
from satvault.simnet._views import btc
from satvault.simnet._wallet import faucet_coins

__all__ = [
    "simnet_doublespend",
    "simnet_faucet_balance",
    "simnet_info",
    "simnet_mine",
    "simnet_pay",
    "simnet_paymany",
    "simnet_reorg",
    "simnet_replace",
    "simnet_setchain",
    "simnet_setfeerate",
    "simnet_setsync",
    "simnet_settxindex",
    "simnet_warmup",
]


def _outputs_param(v: Any) -> list[tuple[str, int]]:
    if isinstance(v, dict):
        return [(str_(k), int_(s)) for k, s in v.items()]
    if isinstance(v, list):
        out = []
        for item in v:
            if not isinstance(item, list) or len(item) != 2:
                raise RpcError(RPC_INVALID_PARAMETER, "outputs: [[address, sat], …]")
            out.append((str_(item[0]), int_(item[1])))
        return out
    raise type_error(v, "object")


def simnet_pay(ctx: RpcContext, p: list[Any]) -> Any:
    amount = None if p[1] is None else int_(p[1])
    rbf = True if p[3] is None else bool_(p[3])
    return ctx.chain.pay(str_(p[0]), amount, feerate_sat_vb=feerate_param(p[2]), rbf=rbf)


def simnet_paymany(ctx: RpcContext, p: list[Any]) -> Any:
    rbf = True if p[2] is None else bool_(p[2])
    return ctx.chain.pay_many(_outputs_param(p[0]), feerate_sat_vb=feerate_param(p[1]),
                              rbf=rbf)


def simnet_mine(ctx: RpcContext, p: list[Any]) -> Any:
    n = 1 if p[0] is None else int_(p[0])
    return ctx.chain.mine(n, to_address=None if p[1] is None else str_(p[1]))


def simnet_reorg(ctx: RpcContext, p: list[Any]) -> Any:
    drop = [] if p[1] is None else [hash_(t, "txid") for t in p[1]]
    return ctx.chain.reorg(int_(p[0]), drop_txids=drop)


def simnet_replace(ctx: RpcContext, p: list[Any]) -> Any:
    outputs = None if p[2] is None else _outputs_param(p[2])
    return ctx.chain.replace(hash_(p[0], "txid"), feerate_sat_vb=feerate_param(p[1]),
                             new_outputs=outputs)


def simnet_doublespend(ctx: RpcContext, p: list[Any]) -> Any:
    return ctx.chain.double_spend(hash_(p[0], "txid"),
                                  to_address=None if p[1] is None else str_(p[1]))


def simnet_setfeerate(ctx: RpcContext, p: list[Any]) -> Any:
    rate = feerate_param(p[0])
    assert rate is not None
    ctx.chain.set_feerate(rate)
    return {"feerate_sat_vb": Decimal(ctx.chain.feerate_sat_kvb) / 1000,
            "feerate": btc(ctx.chain.feerate_sat_kvb)}


def simnet_warmup(ctx: RpcContext, p: list[Any]) -> Any:
    seconds = p[0]
    if isinstance(seconds, bool) or not isinstance(seconds, int | Decimal):
        raise type_error(seconds, "number")
    ctx.set_warmup(float(seconds))
    return None


def simnet_setsync(ctx: RpcContext, p: list[Any]) -> Any:
    """Pretend the node is still syncing: its best header ``headers_ahead`` blocks past its
    tip, initial block download on (0: caught up again)."""
    ahead = int_(p[0])
    if ahead < 0:
        raise RpcError(RPC_INVALID_PARAMETER, "headers_ahead must be 0 or more")
    ctx.headers_ahead = ahead
    return {"headers_ahead": ahead}


# The chains Bitcoin Core names in ``getblockchaininfo``.
CORE_CHAINS = ("main", "test", "testnet4", "signet", "regtest")


def simnet_setchain(ctx: RpcContext, p: list[Any]) -> Any:
    """Pretend to be a node of another network: ``getblockchaininfo`` names ``chain`` (Core's
    words) while the blocks stay regtest's; for the checks comparing the node's network with
    the configured one."""
    name = str_(p[0])
    if name not in CORE_CHAINS:
        raise RpcError(RPC_INVALID_PARAMETER, f"unknown chain {name!r}: use "
                       f"{', '.join(CORE_CHAINS)}")
    ctx.chain_name = name
    return {"chain": name}


def simnet_settxindex(ctx: RpcContext, p: list[Any]) -> Any:
    """Pretend the node runs without ``-txindex`` (``enabled`` false: ``getindexinfo`` answers
    ``{}`` and ``getrawtransaction`` finds a confirmed transaction only with its block hash),
    or with an index still being built (``synced`` false); the blocks do not change."""
    enabled = bool_(p[0])
    synced = enabled and (True if p[1] is None else bool_(p[1]))
    ctx.txindex, ctx.txindex_synced = enabled, synced
    return {"txindex": enabled, "synced": synced}


def simnet_faucet_balance(ctx: RpcContext, p: list[Any]) -> Any:
    b = ctx.chain.faucet_balance()
    return {"spendable": btc(b.spendable_sat), "immature": btc(b.immature_sat),
            "unconfirmed": btc(b.unconfirmed_sat), "spendable_sat": b.spendable_sat,
            "immature_sat": b.immature_sat, "unconfirmed_sat": b.unconfirmed_sat,
            "coins": len(faucet_coins(ctx.chain)), "address": ctx.chain.faucet.receive_address}


def simnet_info(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    return {"height": c.height, "bestblockhash": c.tip.hash, "mempool": len(c.mempool),
            "feerate_sat_vb": Decimal(c.feerate_sat_kvb) / 1000,
            "faucet_address": c.faucet.receive_address, "branch": c.branch}
