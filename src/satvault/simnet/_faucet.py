"""The faucet: simnet's built-in wallet, which mines the coins and pays them out.

Keys are BIP32-derived from the chain seed (BIP84 regtest paths: ``m/84'/1'/0'/0/0`` receives
every coinbase, ``m/84'/1'/0'/1/i`` is the i-th change key), so the same seed always gives
the same addresses and, with deterministic (RFC 6979) signatures, the same transactions.

Coin selection is oldest-first over confirmed, mature coins (coinbase maturity is *honoured*:
the chain starts 110 blocks deep so 11 coinbases are spendable at once, and every spend's
change is spendable again at once); only when those run out does it fall back to the
faucet's own unconfirmed change. Fees are exact: the transaction is built and signed, its
vsize measured, and the change adjusted until ``fee >= ceil(feerate * vsize)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embit.bip32 import HDKey
from embit.networks import NETWORKS
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from satvault.simnet._primitives import Coin, Outpoint, Tx
from satvault.simnet._script import dust_threshold, p2wpkh_spk, script_info
from satvault.simnet.errors import InsufficientFunds

__all__ = ["Faucet", "FaucetBalance", "FaucetCoin"]

RBF_SEQUENCE = 0xFFFFFFFD
FINAL_SEQUENCE = 0xFFFFFFFE  # nLockTime-enabled but not replaceable, like Core's wallet


@dataclass(frozen=True)
class FaucetCoin:
    outpoint: Outpoint
    coin: Coin


@dataclass(frozen=True)
class FaucetBalance:
    spendable_sat: int
    immature_sat: int
    unconfirmed_sat: int


class Faucet:
    def __init__(self, seed: bytes) -> None:
        master = hashlib.sha512(b"satvault simnet faucet/" + seed).digest()
        root = HDKey.from_seed(master, version=NETWORKS["regtest"]["xprv"])
        self._account = root.derive("m/84h/1h/0h")
        self._keys: dict[bytes, Any] = {}
        self.receive_spk = self._derive(0, 0)
        self.change_index = 0

    def _derive(self, branch: int, index: int) -> bytes:
        key = self._account.child(branch).child(index).key
        spk = p2wpkh_spk(key.sec())
        self._keys[spk] = key
        return spk

    @property
    def receive_address(self) -> str:
        address = script_info(self.receive_spk).address
        assert address is not None
        return address

    def owns(self, spk: bytes) -> bool:
        return spk in self._keys

    def new_change_spk(self) -> bytes:
        spk = self._derive(1, self.change_index)
        self.change_index += 1
        return spk

    def restore_change_keys(self, count: int) -> None:
        for i in range(count):
            self._derive(1, i)
        self.change_index = max(self.change_index, count)

    def sign(self, tx: Any, coins: Sequence[Coin]) -> None:
        """Sign every input (all P2WPKH faucet coins) with SIGHASH_ALL."""
        for i, coin in enumerate(coins):
            key = self._keys[coin.spk]
            script_code = Script(b"\x76\xa9\x14" + coin.spk[2:] + b"\x88\xac")
            msg = tx.sighash_segwit(i, script_code, coin.value, SIGHASH.ALL)
            sig = key.sign(msg).serialize() + bytes([SIGHASH.ALL])
            tx.vin[i].witness = Witness([sig, key.sec()])

    def build(self, *, required: Sequence[FaucetCoin], available: Sequence[FaucetCoin],
              outputs: Sequence[tuple[bytes, int]], feerate_sat_kvb: int, rbf: bool,
              min_fee: Callable[[int], int] = lambda vsize: 0,
              change_spk: bytes | None = None) -> Tx:
        """A signed transaction paying ``outputs`` from ``required`` plus as many of
        ``available`` (in order) as needed, with change back to the faucet."""
        target = sum(v for _, v in outputs)
        selected = list(required)
        pool = [c for c in available if c.outpoint not in {s.outpoint for s in selected}]
        change = change_spk if change_spk is not None else self.new_change_spk()
        sequence = RBF_SEQUENCE if rbf else FINAL_SEQUENCE
        while True:
            built = self._try_build(selected, outputs, target, change, feerate_sat_kvb,
                                    sequence, min_fee)
            if built is not None:
                return built
            if not pool:
                have = sum(c.coin.value for c in selected)
                raise InsufficientFunds(
                    f"Insufficient funds: the faucet has {have} sat spendable for "
                    f"{target} sat plus fee")
            selected.append(pool.pop(0))

    def _try_build(self, selected: list[FaucetCoin], outputs: Sequence[tuple[bytes, int]],
                   target: int, change_spk: bytes, feerate_sat_kvb: int, sequence: int,
                   min_fee: Callable[[int], int]) -> Tx | None:
        if not selected:
            return None
        total_in = sum(c.coin.value for c in selected)
        change_value = total_in - target
        with_change = True
        for _ in range(6):
            outs = list(outputs) + ([(change_spk, max(change_value, 0))] if with_change else [])
            tx = self._signed(selected, outs, sequence)
            fee_needed = max(-(-feerate_sat_kvb * tx.vsize // 1000), min_fee(tx.vsize))
            if with_change:
                want = total_in - target - fee_needed
                if want == change_value:
                    return tx
                if want < dust_threshold(change_spk):
                    with_change = False
                    continue
                change_value = want
            else:
                return tx if total_in - target >= fee_needed else None
        return None

    def _signed(self, selected: Sequence[FaucetCoin], outs: Sequence[tuple[bytes, int]],
                sequence: int) -> Tx:
        vin = [TransactionInput(bytes.fromhex(c.outpoint[0]), c.outpoint[1], sequence=sequence)
               for c in selected]
        vout = [TransactionOutput(value, Script(spk)) for spk, value in outs]
        tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
        self.sign(tx, [c.coin for c in selected])
        return Tx.from_embit(tx)
