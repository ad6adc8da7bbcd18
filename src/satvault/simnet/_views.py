"""JSON shapes of transactions, blocks, headers and mempool entries, as Bitcoin Core 28
prints them (``TxToUniv``, ``blockToJSON``, ``blockheaderToJSON``, ``entryToJSON``).

Amounts are ``Decimal`` values with exactly eight decimals (``btc``); the RPC layer writes
them into the JSON text digit for digit, never through a float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from satvault.simnet._mempool import MempoolEntry
from satvault.simnet._primitives import COIN, Block, Coin, Tx
from satvault.simnet._script import script_asm, script_info

if TYPE_CHECKING:
    from satvault.simnet.chain import Chain

__all__ = ["block_json", "btc", "header_json", "mempool_entry_json", "spk_json", "tx_json"]

_EIGHT = Decimal("0.00000001")


def btc(sat: int) -> Decimal:
    """Satoshis as an exact BTC Decimal with eight decimals (1 → 0.00000001)."""
    return (Decimal(sat) / COIN).quantize(_EIGHT)


def spk_json(spk: bytes) -> dict[str, Any]:
    info = script_info(spk)
    out: dict[str, Any] = {"asm": script_asm(spk), "desc": info.desc, "hex": spk.hex()}
    if info.address is not None:
        out["address"] = info.address
    out["type"] = info.type
    return out


def tx_json(tx: Tx, *, fee: int | None = None, include_hex: bool = True,
            prevouts: list[Coin] | None = None) -> dict[str, Any]:
    vin: list[dict[str, Any]] = []
    for i, inp in enumerate(tx.tx.vin):
        item: dict[str, Any]
        if tx.is_coinbase:
            item = {"coinbase": inp.script_sig.data.hex()}
        else:
            item = {"txid": inp.txid.hex(), "vout": inp.vout,
                    "scriptSig": {"asm": script_asm(inp.script_sig.data, sighash_decode=True),
                                  "hex": inp.script_sig.data.hex()}}
        if inp.witness.items:
            item["txinwitness"] = [w.hex() for w in inp.witness.items]
        if prevouts is not None and not tx.is_coinbase:
            coin = prevouts[i]
            item["prevout"] = {"generated": coin.coinbase, "height": coin.height,
                               "value": btc(coin.value), "scriptPubKey": spk_json(coin.spk)}
        item["sequence"] = inp.sequence
        vin.append(item)
    vout = [{"value": btc(out.value), "n": n, "scriptPubKey": spk_json(out.script_pubkey.data)}
            for n, out in enumerate(tx.tx.vout)]
    out: dict[str, Any] = {
        "txid": tx.txid, "hash": tx.wtxid, "version": tx.tx.version, "size": tx.size,
        "vsize": tx.vsize, "weight": tx.weight, "locktime": tx.tx.locktime,
        "vin": vin, "vout": vout,
    }
    if fee is not None:
        out["fee"] = btc(fee)
    if include_hex:
        out["hex"] = tx.hex
    return out


def _difficulty(bits: int) -> float:
    shift = (bits >> 24) & 0xFF
    diff = 0x0000FFFF / (bits & 0x00FFFFFF)
    while shift < 29:
        diff *= 256.0
        shift += 1
    while shift > 29:
        diff /= 256.0
        shift -= 1
    return diff


def _median_time(chain: Chain, height: int) -> int:
    times = sorted(chain.block_time(h) for h in range(max(0, height - 10), height + 1))
    return times[len(times) // 2]


def _header_fields(chain: Chain, block: Block) -> dict[str, Any]:
    h = block.header
    return {"version": h.version, "versionHex": f"{h.version:08x}",
            "merkleroot": h.merkle[::-1].hex(), "time": h.time,
            "mediantime": _median_time(chain, block.height), "nonce": h.nonce,
            "bits": f"{h.bits:08x}", "difficulty": _difficulty(h.bits),
            "chainwork": f"{2 * (block.height + 1):064x}", "nTx": len(block.txs)}


def _links(chain: Chain, block: Block) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if block.height > 0:
        out["previousblockhash"] = block.header.prev[::-1].hex()
    nxt = chain.block_at(block.height + 1) if chain.is_active(block) else None
    if nxt is not None:
        out["nextblockhash"] = nxt.hash
    return out


def header_json(chain: Chain, block: Block) -> dict[str, Any]:
    return {"hash": block.hash, "confirmations": chain.confirmations(block),
            "height": block.height, **_header_fields(chain, block), **_links(chain, block)}


def block_json(chain: Chain, block: Block, verbosity: int) -> dict[str, Any]:
    txs: list[Any]
    if verbosity <= 1:
        txs = [t.txid for t in block.txs]
    else:
        undo = chain.spent_coins(block)
        txs = []
        for pos, t in enumerate(block.txs):
            fee = None
            if pos > 0:
                fee = sum(c.value for c in undo[pos]) - sum(o.value for o in t.tx.vout)
            txs.append(tx_json(t, fee=fee, prevouts=undo[pos] if verbosity >= 3 else None))
    fields = _header_fields(chain, block)
    return {"hash": block.hash, "confirmations": chain.confirmations(block),
            "size": block.size(), "strippedsize": block.stripped_size(),
            "weight": block.weight(), "height": block.height, "version": fields["version"],
            "versionHex": fields["versionHex"], "merkleroot": fields["merkleroot"], "tx": txs,
            **{k: fields[k] for k in ("time", "mediantime", "nonce", "bits", "difficulty",
                                      "chainwork", "nTx")},
            **_links(chain, block)}


def mempool_entry_json(chain: Chain, entry: MempoolEntry) -> dict[str, Any]:
    pool = chain.mempool
    ancestors = pool.ancestors(entry.txid)
    descendants = pool.descendants(entry.txid)

    def entries(txids: set[str] | list[str]) -> list[MempoolEntry]:
        found = [pool.get(t) for t in txids]
        return [e for e in found if e is not None]

    anc = entries(ancestors)
    desc = entries(descendants)
    replaceable = entry.signals_rbf or any(e.signals_rbf for e in anc)
    return {
        "vsize": entry.vsize, "weight": entry.tx.weight, "time": entry.time,
        "height": entry.height,
        "descendantcount": len(desc), "descendantsize": sum(e.vsize for e in desc),
        "ancestorcount": len(anc) + 1, "ancestorsize": entry.vsize + sum(e.vsize for e in anc),
        "wtxid": entry.tx.wtxid,
        "fees": {"base": btc(entry.fee), "modified": btc(entry.fee),
                 "ancestor": btc(entry.fee + sum(e.fee for e in anc)),
                 "descendant": btc(sum(e.fee for e in desc))},
        "depends": sorted(entry.parents),
        "spentby": sorted(pool.children(entry.txid)),
        "bip125-replaceable": replaceable,
        "unbroadcast": False,
    }
