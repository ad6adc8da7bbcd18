"""Mempool acceptance, in Bitcoin Core 28's order and words.

``accept`` runs the checks ``AcceptToMemoryPool`` runs for one transaction — consensus
sanity, standardness (version, size, dust), finality, duplicates, conflicts, missing inputs,
relative locks, coinbase maturity, value balance, witness standardness, the minimum relay
fee, full-RBF replacement rules, then the input scripts — and raises ``TxRejected`` with the
reason (and detail) Core would give. Full RBF is on (Core 28's default): any mempool
transaction may be replaced by one paying a higher feerate and at least the evicted fees
plus the incremental relay fee for its own size.

Not modelled: sigop limits, package (CPFP) evaluation, TRUC (v3) topology rules, the
mempool size limit and its rolling minimum fee, ephemeral dust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from satvault.simnet._mempool import Mempool, MempoolEntry
from satvault.simnet._primitives import (
    MAX_MONEY,
    Coin,
    Outpoint,
    Tx,
    format_feerate,
    format_money,
)
from satvault.simnet._script import (
    dust_threshold,
    is_push_only,
    is_unspendable,
    witness_program,
)
from satvault.simnet._verify import ScriptFailure, SpentOutput, UnsupportedScript, verify_input
from satvault.simnet.errors import RPC_TRANSACTION_ERROR, TxRejected

__all__ = ["AcceptResult", "ChainView", "Policy", "accept"]

ANCESTOR_LIMIT = 25
DESCENDANT_LIMIT = 25
MAX_REPLACEMENT_CANDIDATES = 100
COINBASE_MATURITY = 100
LOCKTIME_THRESHOLD = 500_000_000


class ChainView(Protocol):
    @property
    def height(self) -> int: ...

    def utxo(self, outpoint: Outpoint) -> Coin | None: ...

    def median_time_past(self, height: int) -> int: ...


@dataclass(frozen=True)
class Policy:
    min_relay_sat_kvb: int = 1000
    incremental_relay_sat_kvb: int = 1000
    dust_relay_sat_kvb: int = 3000


@dataclass(frozen=True)
class AcceptResult:
    txid: str
    wtxid: str
    vsize: int
    fee: int
    replaced: tuple[str, ...] = ()


def _fee_for(sat_per_kvb: int, vsize: int) -> int:
    return -(-sat_per_kvb * vsize // 1000)


def _check_transaction(tx: Tx) -> None:
    vin, vout = tx.tx.vin, tx.tx.vout
    if not vin:
        raise TxRejected("bad-txns-vin-empty")
    if not vout:
        raise TxRejected("bad-txns-vout-empty")
    if len(tx.stripped) * 4 > 4_000_000:
        raise TxRejected("bad-txns-oversize")
    total = 0
    for out in vout:
        if out.value > MAX_MONEY:
            raise TxRejected("bad-txns-vout-toolarge")
        total += out.value
        if total > MAX_MONEY:
            raise TxRejected("bad-txns-txouttotal-toolarge")
    if len(set(tx.outpoints())) != len(vin):
        raise TxRejected("bad-txns-inputs-duplicate")
    if tx.is_coinbase:
        if not 2 <= len(vin[0].script_sig.data) <= 100:
            raise TxRejected("bad-cb-length")
    elif any(inp.txid == b"\x00" * 32 and inp.vout == 0xFFFFFFFF for inp in vin):
        raise TxRejected("bad-txns-prevout-null")


def _check_standard(tx: Tx, policy: Policy) -> None:
    if not 1 <= tx.tx.version <= 3:
        raise TxRejected("version")
    if tx.weight > 400_000:
        raise TxRejected("tx-size")
    for inp in tx.tx.vin:
        if len(inp.script_sig.data) > 1650:
            raise TxRejected("scriptsig-size")
        if not is_push_only(inp.script_sig.data):
            raise TxRejected("scriptsig-not-pushonly")
    if sum(1 for out in tx.tx.vout if out.script_pubkey.data[:1] == b"\x6a") > 1:
        raise TxRejected("multi-op-return")
    for out in tx.tx.vout:
        if out.value < dust_threshold(out.script_pubkey.data, policy.dust_relay_sat_kvb):
            raise TxRejected("dust")


def _is_final(tx: Tx, height: int, mtp: int) -> bool:
    locktime = tx.tx.locktime
    if locktime == 0:
        return True
    threshold = height if locktime < LOCKTIME_THRESHOLD else mtp
    if locktime < threshold:
        return True
    return all(inp.sequence == 0xFFFFFFFF for inp in tx.tx.vin)


def _sequence_locks_ok(tx: Tx, coins: list[Coin], chain: ChainView) -> bool:
    if tx.tx.version < 2:
        return True
    next_height = chain.height + 1
    min_height, min_time = -1, -1
    for inp, coin in zip(tx.tx.vin, coins, strict=True):
        seq = inp.sequence
        if seq & (1 << 31):
            continue
        coin_height = min(coin.height, next_height)
        if seq & (1 << 22):
            coin_time = chain.median_time_past(max(coin_height - 1, 0))
            min_time = max(min_time, coin_time + ((seq & 0xFFFF) << 9) - 1)
        else:
            min_height = max(min_height, coin_height + (seq & 0xFFFF) - 1)
    return min_height < next_height and min_time < chain.median_time_past(chain.height)


def _check_witness_standard(tx: Tx, coins: list[Coin]) -> None:
    for inp, coin in zip(tx.tx.vin, coins, strict=True):
        items = inp.witness.items
        if not items:
            continue
        wp = witness_program(coin.spk)
        if wp is None and coin.spk[:2] == b"\xa9\x14":
            pushes = inp.script_sig.data
            wp = witness_program(pushes[1:]) if pushes else None
        if wp is None:
            continue
        version, program = wp
        if version == 0 and len(program) == 32 and (
                len(items[-1]) > 3600 or len(items) - 1 > 100
                or any(len(i) > 80 for i in items[:-1])):
            raise TxRejected("bad-witness-nonstandard")
        if version == 1 and len(program) == 32 and len(items) >= 2 and \
                items[-1][:1] == b"\x50":
            raise TxRejected("bad-witness-nonstandard")


def accept(chain: ChainView, pool: Mempool, tx: Tx, *, time: int, policy: Policy,
           test_only: bool = False, bypass_limits: bool = False,
           max_fee: int | None = None) -> AcceptResult:
    """Validate ``tx`` against the chain tip and ``pool``; add it unless ``test_only``."""
    _check_transaction(tx)
    if tx.is_coinbase:
        raise TxRejected("coinbase")
    _check_standard(tx, policy)
    if len(tx.stripped) < 65:
        raise TxRejected("tx-size-small")
    if not _is_final(tx, chain.height + 1, chain.median_time_past(chain.height)):
        raise TxRejected("non-final")
    if pool.txid_for_wtxid(tx.wtxid) is not None:
        raise TxRejected("txn-already-in-mempool")
    if tx.txid in pool:
        raise TxRejected("txn-same-nonwitness-data-in-mempool")

    conflicts: list[str] = []
    for op in tx.outpoints():
        other = pool.spender(op)
        if other is not None and other not in conflicts:
            conflicts.append(other)

    coins: list[Coin] = []
    for op in tx.outpoints():
        coin = chain.utxo(op) or pool.output(op, chain.height)
        if coin is None:
            if any(chain.utxo((tx.txid, n)) for n in range(len(tx.tx.vout))):
                raise TxRejected("txn-already-known")
            raise TxRejected("bad-txns-inputs-missingorspent", code=RPC_TRANSACTION_ERROR)
        coins.append(coin)

    if not _sequence_locks_ok(tx, coins, chain):
        raise TxRejected("non-BIP68-final")
    spend_height = chain.height + 1
    for coin in coins:
        if coin.coinbase and spend_height - coin.height < COINBASE_MATURITY:
            raise TxRejected("bad-txns-premature-spend-of-coinbase",
                             f"tried to spend coinbase at depth {spend_height - coin.height}")
    value_in = sum(c.value for c in coins)
    value_out = sum(out.value for out in tx.tx.vout)
    if value_in < value_out:
        raise TxRejected("bad-txns-in-belowout",
                         f"value in ({format_money(value_in)}) < value out "
                         f"({format_money(value_out)})")
    _check_witness_standard(tx, coins)
    fee = value_in - value_out
    vsize = tx.vsize
    if not bypass_limits:
        min_fee = _fee_for(policy.min_relay_sat_kvb, vsize)
        if fee < min_fee:
            raise TxRejected("min relay fee not met", f"{fee} < {min_fee}")

    parents = {op[0] for op in tx.outpoints() if op[0] in pool}
    ancestors = set(parents)
    for p in parents:
        ancestors |= pool.ancestors(p)
    evicted: list[str] = []
    for c in conflicts:
        evicted += [t for t in pool.descendants(c) if t not in evicted]
    ancestors_kept = ancestors - set(evicted)
    if len(ancestors_kept) + 1 > ANCESTOR_LIMIT:
        raise TxRejected("too-long-mempool-chain",
                         f"too many unconfirmed ancestors [limit: {ANCESTOR_LIMIT}]")
    for a in ancestors_kept:
        if len([d for d in pool.descendants(a) if d not in evicted]) + 1 > DESCENDANT_LIMIT:
            raise TxRejected("too-long-mempool-chain",
                             f"too many descendants for tx {a} [limit: {DESCENDANT_LIMIT}]")

    if conflicts:
        _replacement_checks(pool, tx, conflicts, evicted, ancestors, fee, vsize, policy)

    spent = [SpentOutput(c.value, c.spk) for c in coins]
    for i in range(len(coins)):
        try:
            verify_input(tx, i, spent)
        except (ScriptFailure, UnsupportedScript) as exc:
            raise TxRejected(exc.reason) from exc

    if max_fee is not None and fee > max_fee:
        raise TxRejected("max-fee-exceeded", code=RPC_TRANSACTION_ERROR,
                         message="Fee exceeds maximum configured by user "
                                 "(e.g. -maxtxfee, maxfeerate)")
    if not test_only:
        for c in conflicts:
            if c in pool:
                pool.remove_with_descendants(c)
        pool.add(MempoolEntry(tx, fee, time, chain.height))
    return AcceptResult(tx.txid, tx.wtxid, vsize, fee, tuple(evicted))


def _replacement_checks(pool: Mempool, tx: Tx, conflicts: list[str], evicted: list[str],
                        ancestors: set[str], fee: int, vsize: int, policy: Policy) -> None:
    txid = tx.txid
    if len(evicted) > MAX_REPLACEMENT_CANDIDATES:
        raise TxRejected("too many potential replacements",
                         f"rejecting replacement {txid}; too many potential replacements "
                         f"({len(evicted)} > {MAX_REPLACEMENT_CANDIDATES})\n")
    conflict_parents: set[str] = set()
    for c in conflicts:
        entry = pool.get(c)
        assert entry is not None
        conflict_parents |= {op[0] for op in entry.tx.outpoints()}
    for idx, op in enumerate(tx.outpoints()):
        if op[0] not in conflict_parents and op[0] in pool:
            raise TxRejected("replacement-adds-unconfirmed",
                             f"replacement {txid} adds unconfirmed input, idx {idx}")
    for a in ancestors:
        if a in evicted:
            raise TxRejected("bad-txns-spends-conflicting-tx",
                             f"{txid} spends conflicting transaction {a}")
    new_rate = fee * 1000 // vsize
    for c in conflicts:
        entry = pool.get(c)
        assert entry is not None
        old_rate = entry.fee * 1000 // entry.vsize
        if new_rate <= old_rate:
            raise TxRejected("insufficient fee",
                             f"rejecting replacement {txid}; new feerate "
                             f"{format_feerate(new_rate)} <= old feerate "
                             f"{format_feerate(old_rate)}")
    old_fees = 0
    for t in evicted:
        entry = pool.get(t)
        assert entry is not None
        old_fees += entry.fee
    if fee < old_fees:
        raise TxRejected("insufficient fee",
                         f"rejecting replacement {txid}, less fees than conflicting txs; "
                         f"{format_money(fee)} < {format_money(old_fees)}")
    relay = _fee_for(policy.incremental_relay_sat_kvb, vsize)
    if fee - old_fees < relay:
        raise TxRejected("insufficient fee",
                         f"rejecting replacement {txid}, not enough additional fees to relay; "
                         f"{format_money(fee - old_fees)} < {format_money(relay)}")


def unspendable_total(tx: Tx) -> int:
    """Value sent to provably unspendable outputs (for sendrawtransaction's maxburnamount)."""
    return sum(out.value for out in tx.tx.vout if is_unspendable(out.script_pubkey.data))
