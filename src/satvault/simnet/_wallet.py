"""Faucet operations on a chain: pay, pay many, RBF-replace, double-spend, balance.

Every transaction built here goes through the same mempool acceptance as one submitted over
RPC, so a faucet payment that would be dust, or a replacement that does not pay enough, is
refused with the error bitcoind would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from satvault.simnet._accept import COINBASE_MATURITY
from satvault.simnet._faucet import FaucetBalance, FaucetCoin
from satvault.simnet._script import address_to_spk
from satvault.simnet.bip21 import check_amount, parse_destination
from satvault.simnet.errors import ChainStateError, InvalidAmount, UnknownTransaction

if TYPE_CHECKING:
    from satvault.simnet.chain import Chain

__all__ = ["balance", "double_spend", "faucet_coins", "pay", "pay_many", "replace"]


def faucet_coins(chain: Chain, *, include_unconfirmed: bool = True) -> list[FaucetCoin]:
    """Spendable faucet coins: confirmed (oldest first), then unconfirmed change."""
    faucet, pool = chain.faucet, chain.mempool
    confirmed = [
        FaucetCoin(op, coin) for op, coin in chain.utxos()
        if faucet.owns(coin.spk) and pool.spender(op) is None
        and not (coin.coinbase and chain.height + 1 - coin.height < COINBASE_MATURITY)
    ]
    confirmed.sort(key=lambda c: (c.coin.height, c.outpoint))
    if not include_unconfirmed:
        return confirmed
    unconfirmed: list[tuple[int, FaucetCoin]] = []
    for entry in pool:
        for n, out in enumerate(entry.tx.tx.vout):
            op = (entry.txid, n)
            if faucet.owns(out.script_pubkey.data) and pool.spender(op) is None:
                coin = pool.output(op, chain.height)
                assert coin is not None
                unconfirmed.append((len(pool.ancestors(entry.txid)), FaucetCoin(op, coin)))
    # Shortest unconfirmed chains first, to stay clear of the 25-ancestor limit.
    unconfirmed.sort(key=lambda pair: pair[0])
    return confirmed + [c for _, c in unconfirmed]


def balance(chain: Chain) -> FaucetBalance:
    spendable = immature = 0
    for op, coin in chain.utxos():
        if not chain.faucet.owns(coin.spk) or chain.mempool.spender(op) is not None:
            continue
        if coin.coinbase and chain.height + 1 - coin.height < COINBASE_MATURITY:
            immature += coin.value
        else:
            spendable += coin.value
    unconfirmed = sum(c.coin.value for c in faucet_coins(chain)
                      if c.coin.height > chain.height)
    return FaucetBalance(spendable, immature, unconfirmed)


def _feerate_kvb(chain: Chain, feerate_sat_vb: int | Decimal | None) -> int:
    if feerate_sat_vb is None:
        return chain.feerate_sat_kvb
    if isinstance(feerate_sat_vb, bool) or not isinstance(feerate_sat_vb, int | Decimal):
        raise InvalidAmount("feerate must be an int or Decimal (sat/vB)")
    kvb = int(Decimal(feerate_sat_vb) * 1000)
    if kvb <= 0:
        raise InvalidAmount("feerate must be positive")
    return kvb


def _pay_spks(chain: Chain, outputs: Sequence[tuple[bytes, int]],
              feerate_sat_vb: int | Decimal | None, rbf: bool) -> str:
    if not outputs:
        raise InvalidAmount("no outputs to pay")
    tx = chain.faucet.build(required=[], available=faucet_coins(chain), outputs=outputs,
                            feerate_sat_kvb=_feerate_kvb(chain, feerate_sat_vb), rbf=rbf)
    return chain.submit(tx)


def pay(chain: Chain, destination: str, amount_sat: int | None = None, *,
        feerate_sat_vb: int | Decimal | None = None, rbf: bool = True) -> str:
    dest = parse_destination(destination, amount_sat)
    if dest.amount_sat is None:
        raise InvalidAmount("an amount is required (amount_sat, or amount= in the URI)")
    return _pay_spks(chain, [(dest.spk, dest.amount_sat)], feerate_sat_vb, rbf)


def _outputs(outputs: Sequence[tuple[str, int]]) -> list[tuple[bytes, int]]:
    return [(address_to_spk(addr), check_amount(sat)) for addr, sat in outputs]


def pay_many(chain: Chain, outputs: Sequence[tuple[str, int]], *,
             feerate_sat_vb: int | Decimal | None = None, rbf: bool = True) -> str:
    return _pay_spks(chain, _outputs(outputs), feerate_sat_vb, rbf)


def _faucet_inputs(chain: Chain, txid: str) -> list[FaucetCoin]:
    entry = chain.mempool.get(txid)
    if entry is None:
        raise UnknownTransaction(f"Transaction not in mempool: {txid}")
    coins = []
    for op in entry.tx.outpoints():
        coin = chain.utxo(op) or chain.mempool.output(op, chain.height)
        if coin is None or not chain.faucet.owns(coin.spk):
            raise UnknownTransaction(f"{txid} spends coins the faucet cannot sign for")
        coins.append(FaucetCoin(op, coin))
    return coins


def _bump(chain: Chain, txid: str, feerate_sat_vb: int | Decimal | None,
          outputs: list[tuple[bytes, int]], change_spk: bytes | None) -> str:
    required = _faucet_inputs(chain, txid)
    entry = chain.mempool.get(txid)
    assert entry is not None
    evicted = chain.mempool.descendants(txid)
    old_fees = 0
    for t in evicted:
        e = chain.mempool.get(t)
        assert e is not None
        old_fees += e.fee
    old_rate = entry.fee * 1000 // entry.vsize
    incremental = chain.policy.incremental_relay_sat_kvb
    if feerate_sat_vb is None:
        feerate = max(old_rate + incremental, chain.feerate_sat_kvb)
    else:
        feerate = _feerate_kvb(chain, feerate_sat_vb)

    def min_fee(vsize: int) -> int:
        return old_fees + -(-incremental * vsize // 1000)

    available = [c for c in faucet_coins(chain, include_unconfirmed=False)]
    tx = chain.faucet.build(required=required, available=available, outputs=outputs,
                            feerate_sat_kvb=feerate, rbf=True, min_fee=min_fee,
                            change_spk=change_spk)
    return chain.submit(tx)


def replace(chain: Chain, txid: str, *, feerate_sat_vb: int | Decimal | None = None,
            new_outputs: Sequence[tuple[str, int]] | None = None) -> str:
    entry = chain.mempool.get(txid)
    if entry is None:
        raise UnknownTransaction(f"Transaction not in mempool: {txid}")
    faucet = chain.faucet
    vout = entry.tx.tx.vout
    change = next((o.script_pubkey.data for o in vout if faucet.owns(o.script_pubkey.data)),
                  None)
    if new_outputs is not None:
        outputs = _outputs(new_outputs)
    else:
        outputs = [(o.script_pubkey.data, o.value) for o in vout
                   if not faucet.owns(o.script_pubkey.data)]
    if not outputs and change is None:
        raise ChainStateError(f"{txid} has nothing to keep paying")
    return _bump(chain, txid, feerate_sat_vb, outputs, change)


def double_spend(chain: Chain, txid: str, *, to_address: str | None = None) -> str:
    spk = address_to_spk(to_address) if to_address else chain.faucet.new_change_spk()
    return _bump(chain, txid, None, [], spk)
