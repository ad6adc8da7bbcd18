"""The bitcoind JSON-RPC methods simnet answers: Bitcoin Core 28's names, parameters
(positional or named), result shapes and errors; plus the table that also routes the
``simnet_*`` control methods (``_control``).

``dispatch`` takes a method name and its params and returns a JSON-ready value or raises
``RpcError``. Simnet errors are translated here, once: each ``SimnetError`` carries the
bitcoind code it stands for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from satvault.simnet import _control as control
from satvault.simnet._accept import AcceptResult, unspendable_total
from satvault.simnet._params import (
    NOT_FOUND_TX,
    NOT_FOUND_TX_NO_INDEX,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_TRANSACTION_ERROR,
    Method,
    RpcContext,
    RpcError,
    amount,
    bool_,
    decode,
    hash_,
    int_,
    max_fee,
    max_fee_kvb,
    str_,
    type_error,
    verbosity,
)
from satvault.simnet._primitives import Block, Coin, Tx
from satvault.simnet._script import address_to_spk, script_info, witness_program
from satvault.simnet._views import (
    block_json,
    btc,
    header_json,
    mempool_entry_json,
    spk_json,
    tx_json,
)
from satvault.simnet.errors import SimnetError, TxRejected

__all__ = ["METHODS", "dispatch"]


def getblockchaininfo(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    tip = c.tip
    ahead = ctx.headers_ahead
    headers = c.height + ahead
    progress = Decimal(1) if not ahead else \
        (Decimal(c.height) / Decimal(headers)).quantize(Decimal("0.000001"))
    return {"chain": ctx.chain_name, "blocks": c.height, "headers": headers,
            "bestblockhash": tip.hash, "difficulty": 4.656542373906925e-10,
            "time": tip.header.time, "mediantime": c.median_time_past(c.height),
            "verificationprogress": progress, "initialblockdownload": ahead > 0,
            "chainwork": f"{2 * (c.height + 1):064x}",
            "size_on_disk": c.size_on_disk(),
            "pruned": False, "warnings": []}


def getnetworkinfo(ctx: RpcContext, p: list[Any]) -> Any:
    def net(name: str, reachable: bool) -> dict[str, Any]:
        return {"name": name, "limited": not reachable, "reachable": reachable, "proxy": "",
                "proxy_randomize_credentials": False}

    relay = btc(ctx.chain.policy.min_relay_sat_kvb)
    return {"version": 280000, "subversion": "/Satoshi:28.0.0/", "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": True, "timeoffset": 0, "networkactive": True, "connections": 0,
            "connections_in": 0, "connections_out": 0,
            "networks": [net("ipv4", True), net("ipv6", True), net("onion", False),
                         net("i2p", False), net("cjdns", False)],
            "relayfee": relay, "incrementalfee": btc(ctx.chain.policy.incremental_relay_sat_kvb),
            "localaddresses": [], "warnings": []}


def getblockhash(ctx: RpcContext, p: list[Any]) -> Any:
    block = ctx.chain.block_at(int_(p[0]))
    if block is None:
        raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
    return block.hash


def _block(ctx: RpcContext, v: Any) -> Any:
    block = ctx.chain.block(hash_(v, "blockhash"))
    if block is None:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return block


def getblockheader(ctx: RpcContext, p: list[Any]) -> Any:
    block = _block(ctx, p[0])
    if not (True if p[1] is None else bool_(p[1])):
        return block.header.serialize().hex()
    return header_json(ctx.chain, block)


def getblock(ctx: RpcContext, p: list[Any]) -> Any:
    block = _block(ctx, p[0])
    level = verbosity(p[1], 1)
    if level <= 0:
        return block.serialize().hex()
    return block_json(ctx.chain, block, min(level, 3))


def getchaintips(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    tips = [{"height": c.height, "hash": c.tip.hash, "branchlen": 0, "status": "active"}]
    for block in c.stale_tips():
        fork = block
        while not c.is_active(fork):
            parent = c.block(fork.header.prev[::-1].hex())
            assert parent is not None
            fork = parent
        tips.append({"height": block.height, "hash": block.hash,
                     "branchlen": block.height - fork.height, "status": "valid-fork"})
    return tips


def getrawmempool(ctx: RpcContext, p: list[Any]) -> Any:
    verbose = False if p[0] is None else bool_(p[0])
    sequence = False if p[1] is None else bool_(p[1])
    pool = ctx.chain.mempool
    if verbose and sequence:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Verbose results cannot contain mempool sequence values.")
    if verbose:
        return {e.txid: mempool_entry_json(ctx.chain, e) for e in pool}
    txids = [e.txid for e in pool]
    return {"txids": txids, "mempool_sequence": pool.sequence} if sequence else txids


def getmempoolentry(ctx: RpcContext, p: list[Any]) -> Any:
    entry = ctx.chain.mempool.get(hash_(p[0], "txid"))
    if entry is None:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
    return mempool_entry_json(ctx.chain, entry)


def getmempoolinfo(ctx: RpcContext, p: list[Any]) -> Any:
    pool, policy = ctx.chain.mempool, ctx.chain.policy
    return {"loaded": True, "size": len(pool), "bytes": sum(e.vsize for e in pool),
            "usage": sum(e.tx.size * 4 for e in pool), "total_fee": btc(sum(e.fee for e in pool)),
            "maxmempool": 300_000_000, "mempoolminfee": btc(policy.min_relay_sat_kvb),
            "minrelaytxfee": btc(policy.min_relay_sat_kvb),
            "incrementalrelayfee": btc(policy.incremental_relay_sat_kvb),
            "unbroadcastcount": 0, "fullrbf": True}


def _prevouts(ctx: RpcContext, tx: Tx) -> list[Coin] | None:
    coins = []
    for op in tx.outpoints():
        coin = ctx.chain.utxo(op) or ctx.chain.mempool.output(op, ctx.chain.height)
        if coin is None:
            return None
        coins.append(coin)
    return coins


def getrawtransaction(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    txid = hash_(p[0], "txid")
    level = verbosity(p[1], 0)
    found: tuple[Tx, Block | None]
    if p[2] is not None:
        block = c.block(hash_(p[2], "blockhash"))
        if block is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
        pos = next((i for i, t in enumerate(block.txs) if t.txid == txid), None)
        if pos is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "No such transaction found in the "
                           "provided block. Use gettransaction for wallet transactions.")
        found = (block.txs[pos], block)
    else:
        if txid == c.block_at(0).txs[0].txid:  # type: ignore[union-attr]
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "The genesis block coinbase is not "
                           "considered an ordinary transaction and cannot be retrieved")
        hit = c.find_tx(txid)
        if hit is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY,
                           NOT_FOUND_TX if ctx.txindex else NOT_FOUND_TX_NO_INDEX)
        if hit[1] is not None and not ctx.txindex:  # in a block: only the index finds it
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, NOT_FOUND_TX_NO_INDEX)
        found = hit
    tx, block = found
    if level <= 0:
        return tx.hex
    fee = prevouts = None
    if level >= 2 and not tx.is_coinbase:
        if block is not None:
            pos = next(i for i, t in enumerate(block.txs) if t.txid == txid)
            prevouts = c.spent_coins(block)[pos] if c.is_active(block) else None
        else:
            prevouts = _prevouts(ctx, tx)
        if prevouts is not None:
            fee = sum(x.value for x in prevouts) - sum(o.value for o in tx.tx.vout)
    out: dict[str, Any] = {}
    if p[2] is not None:
        out["in_active_chain"] = block is not None and c.is_active(block)
    out.update(tx_json(tx, fee=fee, prevouts=prevouts))
    if block is not None:
        out["blockhash"] = block.hash
        if c.is_active(block):
            out["confirmations"] = c.confirmations(block)
            out["time"] = block.header.time
            out["blocktime"] = block.header.time
        else:
            out["confirmations"] = 0
    return out


def decoderawtransaction(ctx: RpcContext, p: list[Any]) -> Any:
    return tx_json(decode(p[0], "TX decode failed"), include_hex=False)


def gettxout(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    op = (hash_(p[0], "txid"), int_(p[1]))
    include_mempool = True if p[2] is None else bool_(p[2])
    coin = c.utxo(op)
    if include_mempool:
        if c.mempool.spender(op) is not None:
            return None
        if coin is None:
            coin = c.mempool.output(op, c.height)
    if coin is None:
        return None
    confirmations = 0 if coin.height > c.height else c.height - coin.height + 1
    return {"bestblock": c.tip.hash, "confirmations": confirmations, "value": btc(coin.value),
            "scriptPubKey": spk_json(coin.spk), "coinbase": coin.coinbase}


def sendrawtransaction(ctx: RpcContext, p: list[Any]) -> Any:
    tx = decode(p[0], "TX decode failed. Make sure the tx has at least one input.")
    max_kvb = max_fee_kvb(p[1])
    max_burn = 0 if p[2] is None else amount(p[2])
    if unspendable_total(tx) > max_burn:
        raise RpcError(RPC_TRANSACTION_ERROR, "Unspendable output exceeds maximum configured "
                                              "by user (maxburnamount)")
    return ctx.chain.submit(tx, max_fee=max_fee(max_kvb, tx))


def testmempoolaccept(ctx: RpcContext, p: list[Any]) -> Any:
    raws = p[0]
    if not isinstance(raws, list):
        raise type_error(raws, "array")
    if not 1 <= len(raws) <= 25:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Array must contain between 1 and 25 transactions.")
    txs = []
    for raw in raws:
        txs.append(decode(raw, f"TX decode failed: {raw} Make sure the tx has at least one "
                                f"input."))
    max_kvb = max_fee_kvb(p[1])
    out = []
    for tx, res in zip(txs, ctx.chain.test_accept(txs), strict=True):
        item: dict[str, Any] = {"txid": tx.txid, "wtxid": tx.wtxid}
        cap = max_fee(max_kvb, tx)
        if isinstance(res, AcceptResult) and cap is not None and res.fee > cap:
            res = TxRejected("max-fee-exceeded")
        if isinstance(res, AcceptResult):
            item.update({"allowed": True, "vsize": res.vsize,
                         "fees": {"base": btc(res.fee),
                                  "effective-feerate": btc(res.fee * 1000 // res.vsize),
                                  "effective-includes": [tx.wtxid]}})
        else:
            reason = "missing-inputs" if res.missing_inputs else res.reason
            item.update({"allowed": False, "reject-reason": reason})
        out.append(item)
    return out


def estimatesmartfee(ctx: RpcContext, p: list[Any]) -> Any:
    target = int_(p[0])
    if not 1 <= target <= 1008:
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
    if p[1] is not None and str_(p[1]).lower() not in ("unset", "economical", "conservative"):
        raise RpcError(RPC_INVALID_PARAMETER, 'Invalid estimate_mode parameter, must be one '
                                              'of: "unset", "economical", "conservative"')
    return {"feerate": btc(ctx.chain.feerate_sat_kvb), "blocks": max(2, target)}


def generatetoaddress(ctx: RpcContext, p: list[Any]) -> Any:
    n = int_(p[0])
    address = str_(p[1])
    try:
        address_to_spk(address)
    except SimnetError as exc:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from exc
    return ctx.chain.mine(n, to_address=address)


def validateaddress(ctx: RpcContext, p: list[Any]) -> Any:
    address = str_(p[0])
    try:
        spk = address_to_spk(address)
    except SimnetError:
        return {"isvalid": False, "error_locations": [],
                "error": "Invalid or unsupported Segwit (Bech32) or Base58 encoding."}
    info = script_info(spk)
    out: dict[str, Any] = {"isvalid": True, "address": info.address, "scriptPubKey": spk.hex(),
                           "isscript": info.type in ("scripthash", "witness_v0_scripthash"),
                           "iswitness": witness_program(spk) is not None}
    wp = witness_program(spk)
    if wp is not None:
        out["witness_version"] = wp[0]
        out["witness_program"] = wp[1].hex()
    return out


def getindexinfo(ctx: RpcContext, p: list[Any]) -> Any:
    """The indexes the node runs, by name (Core 0.21+): only the transaction index here, and
    ``{}`` when it is off (``simnet_settxindex``). One still being built (after a restart
    with ``-txindex`` newly on) reports ``synced: false`` at height 0."""
    if not ctx.txindex:
        return {}
    info = {"txindex": {"synced": ctx.txindex_synced,
                        "best_block_height": ctx.chain.height if ctx.txindex_synced else 0}}
    if p[0] is not None:
        return {k: v for k, v in info.items() if k == str_(p[0])}
    return info


def _const(value: Any) -> Callable[[RpcContext, list[Any]], Any]:
    return lambda ctx, p: value


METHODS: dict[str, Method] = {
    "getblockchaininfo": Method(getblockchaininfo, ()),
    "getnetworkinfo": Method(getnetworkinfo, ()),
    "getblockcount": Method(lambda ctx, p: ctx.chain.height, ()),
    "getbestblockhash": Method(lambda ctx, p: ctx.chain.tip.hash, ()),
    "getblockhash": Method(getblockhash, ("height",), 1),
    "getblockheader": Method(getblockheader, ("blockhash", "verbose"), 1),
    "getblock": Method(getblock, ("blockhash", "verbosity"), 1),
    "getchaintips": Method(getchaintips, ()),
    "getrawmempool": Method(getrawmempool, ("verbose", "mempool_sequence")),
    "getmempoolentry": Method(getmempoolentry, ("txid",), 1),
    "getmempoolinfo": Method(getmempoolinfo, ()),
    "getrawtransaction": Method(getrawtransaction, ("txid", "verbosity", "blockhash"), 1),
    "decoderawtransaction": Method(decoderawtransaction, ("hexstring", "iswitness"), 1),
    "gettxout": Method(gettxout, ("txid", "n", "include_mempool"), 2),
    "sendrawtransaction": Method(sendrawtransaction,
                                 ("hexstring", "maxfeerate", "maxburnamount"), 1, True),
    "testmempoolaccept": Method(testmempoolaccept, ("rawtxs", "maxfeerate"), 1),
    "estimatesmartfee": Method(estimatesmartfee, ("conf_target", "estimate_mode"), 1),
    "generatetoaddress": Method(generatetoaddress, ("nblocks", "address", "maxtries"), 2, True),
    "validateaddress": Method(validateaddress, ("address",), 1),
    "getindexinfo": Method(getindexinfo, ("index_name",)),
    "getzmqnotifications": Method(_const([]), ()),
    "ping": Method(_const(None), ()),
    "uptime": Method(lambda ctx, p: int(time.monotonic() - ctx.started), ()),
    "simnet_pay": Method(control.simnet_pay, ("destination", "amount_sat", "feerate_sat_vb", "rbf"),
                         1, True),
    "simnet_paymany": Method(control.simnet_paymany, ("outputs", "feerate_sat_vb", "rbf"), 1, True),
    "simnet_mine": Method(control.simnet_mine, ("nblocks", "address"), 0, True),
    "simnet_reorg": Method(control.simnet_reorg, ("depth", "drop_txids"), 1, True),
    "simnet_replace": Method(control.simnet_replace, ("txid", "feerate_sat_vb", "outputs"), 1,
                             True),
    "simnet_doublespend": Method(control.simnet_doublespend, ("txid", "address"), 1, True),
    "simnet_setfeerate": Method(control.simnet_setfeerate, ("sat_vb",), 1, True),
    "simnet_warmup": Method(control.simnet_warmup, ("seconds",), 1),
    "simnet_setsync": Method(control.simnet_setsync, ("headers_ahead",), 1),
    "simnet_setchain": Method(control.simnet_setchain, ("chain",), 1),
    "simnet_settxindex": Method(control.simnet_settxindex, ("enabled", "synced"), 1),
    "simnet_faucet_balance": Method(control.simnet_faucet_balance, ()),
    "simnet_info": Method(control.simnet_info, ()),
}


_ALIASES = {"verbose": "verbosity"}  # Core accepts both names for getblock/getrawtransaction


def _positional(name: str, method: Method, params: Any) -> list[Any]:
    if isinstance(params, dict):
        named = {(_ALIASES.get(k, k) if k not in method.params else k): v
                 for k, v in params.items()}
        unknown = [k for k in named if k not in method.params]
        if unknown:
            raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {unknown[0]}")
        args = [named.get(k) for k in method.params]
    else:
        args = list(params)
        if len(args) > len(method.params):
            raise RpcError(RPC_MISC_ERROR, _usage(name, method))
        args += [None] * (len(method.params) - len(args))
    if any(a is None for a in args[:method.required]):
        raise RpcError(RPC_MISC_ERROR, _usage(name, method))
    return args


def _usage(name: str, method: Method) -> str:
    req = " ".join(f'"{p}"' for p in method.params[:method.required])
    opt = " ".join(f'"{p}"' for p in method.params[method.required:])
    return f"{name} {req}{' ( ' + opt + ' )' if opt else ''}".strip()


def dispatch(ctx: RpcContext, name: str, params: Any) -> tuple[Any, bool]:
    """Run one method; return (result, whether it changed the chain)."""
    method = METHODS.get(name)
    if method is None:
        raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
    args = _positional(name, method, params)
    try:
        return method.fn(ctx, args), method.mutates
    except SimnetError as exc:
        raise RpcError(exc.rpc_code, exc.message) from exc
