"""The JSON-RPC methods: bitcoind's names, parameters, result shapes and errors, plus the
``simnet_*`` control methods.

``dispatch`` takes a method name and its params (a list, or an object of named params, as
bitcoind accepts both) and returns a JSON-ready value or raises ``RpcError``. Simnet errors
are translated here, once: each ``SimnetError`` carries the bitcoind code it stands for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from satvault.simnet._accept import AcceptResult, unspendable_total
from satvault.simnet._primitives import COIN, Block, Coin, Tx
from satvault.simnet._script import address_to_spk, script_info, witness_program
from satvault.simnet._views import (
    block_json,
    btc,
    header_json,
    mempool_entry_json,
    spk_json,
    tx_json,
)
from satvault.simnet._wallet import faucet_coins
from satvault.simnet.errors import DecodeFailed, SimnetError, TxRejected

if TYPE_CHECKING:
    from satvault.simnet.chain import Chain

__all__ = ["METHODS", "Method", "RpcContext", "RpcError", "dispatch"]

RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_TRANSACTION_ERROR = -25
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601
DEFAULT_MAX_FEERATE = Decimal("0.10")
NOT_FOUND_TX = "No such mempool or blockchain transaction. Use gettransaction for wallet " \
               "transactions."


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass
class RpcContext:
    chain: Chain
    started: float = field(default_factory=time.monotonic)
    set_warmup: Callable[[float], None] = lambda seconds: None


@dataclass(frozen=True)
class Method:
    fn: Callable[[RpcContext, list[Any]], Any]
    params: tuple[str, ...]
    required: int = 0
    mutates: bool = False


# -- parameter helpers ---------------------------------------------------------------

def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float | Decimal):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _type_error(v: Any, expected: str) -> RpcError:
    return RpcError(RPC_TYPE_ERROR,
                    f"JSON value of type {_json_type(v)} is not of expected type {expected}")


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise _type_error(v, "number")
    if isinstance(v, Decimal):
        if v != v.to_integral_value():
            raise _type_error(v, "number")
        return int(v)
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _type_error(v, "string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _type_error(v, "bool")
    return v


def _hash(v: Any, name: str) -> str:
    s = _str(v)
    if len(s) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(s)}, "
                                              f"for '{s}')")
    try:
        bytes.fromhex(s)
    except ValueError as exc:
        raise RpcError(RPC_INVALID_PARAMETER,
                       f"{name} must be hexadecimal string (not '{s}')") from exc
    return s.lower()


def _verbosity(v: Any, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool):
        return int(v)
    return _int(v)


def _amount(v: Any) -> int:
    """Core's AmountFromValue: a BTC number or numeric string, exact to the satoshi."""
    if isinstance(v, bool) or not isinstance(v, int | Decimal | str):
        raise _type_error(v, "number")
    try:
        value = Decimal(v)
    except ArithmeticError as exc:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from exc
    if not value.is_finite() or value * COIN != (value * COIN).to_integral_value():
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    if value < 0 or value > 21_000_000:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return int(value * COIN)


def _max_fee_kvb(v: Any) -> int:
    kvb = _amount(DEFAULT_MAX_FEERATE if v is None else v)
    if kvb >= COIN:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Fee rates larger than or equal to 1BTC/kvB are not accepted")
    return kvb


def _max_fee(kvb: int, tx: Tx) -> int | None:
    return -(-kvb * tx.vsize // 1000) if kvb else None


def _feerate_param(v: Any) -> int | Decimal | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise _type_error(v, "number")
    return v


def _decode(hexstring: Any, message: str) -> Tx:
    try:
        return Tx.from_hex(_str(hexstring))
    except DecodeFailed as exc:
        raise RpcError(RPC_DESERIALIZATION_ERROR, message) from exc


# -- chain queries ---------------------------------------------------------------------

def getblockchaininfo(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    tip = c.tip
    return {"chain": "regtest", "blocks": c.height, "headers": c.height,
            "bestblockhash": tip.hash, "difficulty": 4.656542373906925e-10,
            "time": tip.header.time, "mediantime": c.median_time_past(c.height),
            "verificationprogress": 1, "initialblockdownload": False,
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
    block = ctx.chain.block_at(_int(p[0]))
    if block is None:
        raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
    return block.hash


def _block(ctx: RpcContext, v: Any) -> Any:
    block = ctx.chain.block(_hash(v, "blockhash"))
    if block is None:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return block


def getblockheader(ctx: RpcContext, p: list[Any]) -> Any:
    block = _block(ctx, p[0])
    if not (True if p[1] is None else _bool(p[1])):
        return block.header.serialize().hex()
    return header_json(ctx.chain, block)


def getblock(ctx: RpcContext, p: list[Any]) -> Any:
    block = _block(ctx, p[0])
    verbosity = _verbosity(p[1], 1)
    if verbosity <= 0:
        return block.serialize().hex()
    return block_json(ctx.chain, block, min(verbosity, 3))


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
    verbose = False if p[0] is None else _bool(p[0])
    sequence = False if p[1] is None else _bool(p[1])
    pool = ctx.chain.mempool
    if verbose and sequence:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Verbose results cannot contain mempool sequence values.")
    if verbose:
        return {e.txid: mempool_entry_json(ctx.chain, e) for e in pool}
    txids = [e.txid for e in pool]
    return {"txids": txids, "mempool_sequence": pool.sequence} if sequence else txids


def getmempoolentry(ctx: RpcContext, p: list[Any]) -> Any:
    entry = ctx.chain.mempool.get(_hash(p[0], "txid"))
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
    txid = _hash(p[0], "txid")
    verbosity = _verbosity(p[1], 0)
    found: tuple[Tx, Block | None]
    if p[2] is not None:
        block = c.block(_hash(p[2], "blockhash"))
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
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, NOT_FOUND_TX)
        found = hit
    tx, block = found
    if verbosity <= 0:
        return tx.hex
    fee = prevouts = None
    if verbosity >= 2 and not tx.is_coinbase:
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
    return tx_json(_decode(p[0], "TX decode failed"), include_hex=False)


def gettxout(ctx: RpcContext, p: list[Any]) -> Any:
    c = ctx.chain
    op = (_hash(p[0], "txid"), _int(p[1]))
    include_mempool = True if p[2] is None else _bool(p[2])
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
    tx = _decode(p[0], "TX decode failed. Make sure the tx has at least one input.")
    max_kvb = _max_fee_kvb(p[1])
    max_burn = 0 if p[2] is None else _amount(p[2])
    if unspendable_total(tx) > max_burn:
        raise RpcError(RPC_TRANSACTION_ERROR, "Unspendable output exceeds maximum configured "
                                              "by user (maxburnamount)")
    return ctx.chain.submit(tx, max_fee=_max_fee(max_kvb, tx))


def testmempoolaccept(ctx: RpcContext, p: list[Any]) -> Any:
    raws = p[0]
    if not isinstance(raws, list):
        raise _type_error(raws, "array")
    if not 1 <= len(raws) <= 25:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Array must contain between 1 and 25 transactions.")
    txs = []
    for raw in raws:
        txs.append(_decode(raw, f"TX decode failed: {raw} Make sure the tx has at least one "
                                f"input."))
    max_kvb = _max_fee_kvb(p[1])
    out = []
    for tx, res in zip(txs, ctx.chain.test_accept(txs), strict=True):
        item: dict[str, Any] = {"txid": tx.txid, "wtxid": tx.wtxid}
        cap = _max_fee(max_kvb, tx)
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
    target = _int(p[0])
    if not 1 <= target <= 1008:
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
    if p[1] is not None and _str(p[1]).lower() not in ("unset", "economical", "conservative"):
        raise RpcError(RPC_INVALID_PARAMETER, 'Invalid estimate_mode parameter, must be one '
                                              'of: "unset", "economical", "conservative"')
    return {"feerate": btc(ctx.chain.feerate_sat_kvb), "blocks": max(2, target)}


def generatetoaddress(ctx: RpcContext, p: list[Any]) -> Any:
    n = _int(p[0])
    address = _str(p[1])
    try:
        address_to_spk(address)
    except SimnetError as exc:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from exc
    return ctx.chain.mine(n, to_address=address)


def validateaddress(ctx: RpcContext, p: list[Any]) -> Any:
    address = _str(p[0])
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
    info = {"txindex": {"synced": True, "best_block_height": ctx.chain.height}}
    if p[0] is not None:
        return {k: v for k, v in info.items() if k == _str(p[0])}
    return info


# -- simnet control ---------------------------------------------------------------------

def _outputs_param(v: Any) -> list[tuple[str, int]]:
    if isinstance(v, dict):
        return [(_str(k), _int(s)) for k, s in v.items()]
    if isinstance(v, list):
        out = []
        for item in v:
            if not isinstance(item, list) or len(item) != 2:
                raise RpcError(RPC_INVALID_PARAMETER, "outputs: [[address, sat], …]")
            out.append((_str(item[0]), _int(item[1])))
        return out
    raise _type_error(v, "object")


def simnet_pay(ctx: RpcContext, p: list[Any]) -> Any:
    amount = None if p[1] is None else _int(p[1])
    rbf = True if p[3] is None else _bool(p[3])
    return ctx.chain.pay(_str(p[0]), amount, feerate_sat_vb=_feerate_param(p[2]), rbf=rbf)


def simnet_paymany(ctx: RpcContext, p: list[Any]) -> Any:
    rbf = True if p[2] is None else _bool(p[2])
    return ctx.chain.pay_many(_outputs_param(p[0]), feerate_sat_vb=_feerate_param(p[1]),
                              rbf=rbf)


def simnet_mine(ctx: RpcContext, p: list[Any]) -> Any:
    n = 1 if p[0] is None else _int(p[0])
    return ctx.chain.mine(n, to_address=None if p[1] is None else _str(p[1]))


def simnet_reorg(ctx: RpcContext, p: list[Any]) -> Any:
    drop = [] if p[1] is None else [_hash(t, "txid") for t in p[1]]
    return ctx.chain.reorg(_int(p[0]), drop_txids=drop)


def simnet_replace(ctx: RpcContext, p: list[Any]) -> Any:
    outputs = None if p[2] is None else _outputs_param(p[2])
    return ctx.chain.replace(_hash(p[0], "txid"), feerate_sat_vb=_feerate_param(p[1]),
                             new_outputs=outputs)


def simnet_doublespend(ctx: RpcContext, p: list[Any]) -> Any:
    return ctx.chain.double_spend(_hash(p[0], "txid"),
                                  to_address=None if p[1] is None else _str(p[1]))


def simnet_setfeerate(ctx: RpcContext, p: list[Any]) -> Any:
    rate = _feerate_param(p[0])
    assert rate is not None
    ctx.chain.set_feerate(rate)
    return {"feerate_sat_vb": Decimal(ctx.chain.feerate_sat_kvb) / 1000,
            "feerate": btc(ctx.chain.feerate_sat_kvb)}


def simnet_warmup(ctx: RpcContext, p: list[Any]) -> Any:
    seconds = p[0]
    if isinstance(seconds, bool) or not isinstance(seconds, int | Decimal):
        raise _type_error(seconds, "number")
    ctx.set_warmup(float(seconds))
    return None


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
    "getrawtransaction": Method(getrawtransaction, ("txid", "verbose", "blockhash"), 1),
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
    "simnet_pay": Method(simnet_pay, ("destination", "amount_sat", "feerate_sat_vb", "rbf"),
                         1, True),
    "simnet_paymany": Method(simnet_paymany, ("outputs", "feerate_sat_vb", "rbf"), 1, True),
    "simnet_mine": Method(simnet_mine, ("nblocks", "address"), 0, True),
    "simnet_reorg": Method(simnet_reorg, ("depth", "drop_txids"), 1, True),
    "simnet_replace": Method(simnet_replace, ("txid", "feerate_sat_vb", "outputs"), 1, True),
    "simnet_doublespend": Method(simnet_doublespend, ("txid", "address"), 1, True),
    "simnet_setfeerate": Method(simnet_setfeerate, ("sat_vb",), 1, True),
    "simnet_warmup": Method(simnet_warmup, ("seconds",), 1),
    "simnet_faucet_balance": Method(simnet_faucet_balance, ()),
    "simnet_info": Method(simnet_info, ()),
}


def _positional(name: str, method: Method, params: Any) -> list[Any]:
    if isinstance(params, dict):
        unknown = [k for k in params if k not in method.params]
        if unknown:
            raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {unknown[0]}")
        args = [params.get(k) for k in method.params]
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
