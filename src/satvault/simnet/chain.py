"""The simulated regtest chain: blocks, UTXO set, mempool and the faucet that funds it all.

A ``Chain`` starts at Bitcoin Core's real regtest genesis block (hash ``0f9188f1…``) and mines
``initial_blocks`` (110) blocks to its faucet, so the faucet owns mature coins. Every block is
a real block: a BIP34 coinbase paying subsidy (50 BTC, halving every 150 blocks, as regtest)
plus fees, with a BIP141 witness commitment; an 80-byte header (version 0x20000000, bits
0x207fffff) whose nonce is searched until it meets the (trivial) target; block time =
genesis time + 600 * height. Nothing reads the wall clock, so a seed gives the same chain,
the same hashes and the same txids every time.

Transactions enter the mempool only through ``_accept.accept`` — the faucet's own included —
so everything in a block passed the same checks a submitted transaction faces. ``mine``
puts the whole mempool into the first block. ``reorg`` disconnects blocks (restoring spent
coins from undo data), returns their transactions to the mempool (bar ``drop_txids`` and
their descendants), and mines a longer branch whose coinbases carry a branch tag so every
hash changes; the old blocks stay retrievable by hash with ``confirmations: -1``.

Faucet operations (``pay``, ``replace``, ``double_spend``) are implemented in ``_wallet``,
persistence (``save``/``load``) in ``_persist``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.simnet import _wallet
from satvault.simnet._accept import AcceptResult, Policy, accept
from satvault.simnet._faucet import Faucet, FaucetBalance
from satvault.simnet._mempool import Mempool
from satvault.simnet._primitives import (
    COIN,
    Block,
    Coin,
    Header,
    Outpoint,
    Tx,
    hex_to_hash,
    merkle_root,
    script_num,
    sha256d,
)
from satvault.simnet._script import address_to_spk, is_unspendable
from satvault.simnet.errors import ChainStateError, SimnetError, TxRejected

__all__ = ["DEFAULT_SEED", "GENESIS_HASH", "Chain"]

DEFAULT_SEED = b"satvault-simnet"
GENESIS_TIME = 1296688602
GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
BLOCK_INTERVAL = 600
BLOCK_VERSION = 0x20000000
REGTEST_BITS = 0x207FFFFF
_GENESIS_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04"
    "ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e"
    "206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f205"
    "2a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6"
    "bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000")
_WITNESS_RESERVED = b"\x00" * 32


def _push(data: bytes) -> bytes:
    assert len(data) < 0x4C
    return bytes([len(data)]) + data


def _push_int(n: int) -> bytes:
    if n == 0:
        return b"\x00"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    return _push(script_num(n))


class Chain:
    """A deterministic regtest chain with a mempool and a funded faucet."""

    def __init__(self, seed: bytes | str = DEFAULT_SEED, *, initial_blocks: int = 110,
                 policy: Policy | None = None, halving_interval: int = 150,
                 feerate_sat_vb: int | Decimal = 2) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else bytes(seed)
        self.policy = policy or Policy()
        self.halving_interval = halving_interval
        self.faucet = Faucet(self.seed)
        self.mempool = Mempool()
        self.branch = 0
        self._feerate_sat_kvb = 0
        self.set_feerate(feerate_sat_vb)
        self._blocks: dict[str, Block] = {}
        self._active: list[Block] = []
        self._undo: dict[str, list[list[Coin]]] = {}
        self._utxo: dict[Outpoint, Coin] = {}
        self._txindex: dict[str, tuple[str, int]] = {}
        genesis_cb = Tx.parse(_GENESIS_COINBASE)
        genesis = Block(Header(1, b"\x00" * 32, genesis_cb.txid_bytes, GENESIS_TIME,
                               REGTEST_BITS, 2), (genesis_cb,), 0)
        assert genesis.hash == GENESIS_HASH
        self._blocks[genesis.hash] = genesis
        self._active.append(genesis)
        self._undo[genesis.hash] = [[]]
        if initial_blocks:
            self.mine(initial_blocks)

    # -- views -------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self._active) - 1

    @property
    def tip(self) -> Block:
        return self._active[-1]

    @property
    def genesis_time(self) -> int:
        return GENESIS_TIME

    @property
    def feerate_sat_kvb(self) -> int:
        return self._feerate_sat_kvb

    def set_feerate(self, sat_vb: int | Decimal) -> None:
        """Set the feerate ``estimatesmartfee`` reports and the faucet pays by default."""
        if isinstance(sat_vb, bool) or not isinstance(sat_vb, int | Decimal):
            raise ChainStateError("feerate must be an int or Decimal (sat/vB)")
        kvb = int(Decimal(sat_vb) * 1000)
        if kvb < self.policy.min_relay_sat_kvb:
            raise ChainStateError("feerate below the minimum relay fee (1 sat/vB)")
        self._feerate_sat_kvb = kvb

    def size_on_disk(self) -> int:
        return sum(b.size() for b in self._active)

    def block(self, block_hash: str) -> Block | None:
        return self._blocks.get(block_hash)

    def block_at(self, height: int) -> Block | None:
        return self._active[height] if 0 <= height <= self.height else None

    def is_active(self, block: Block) -> bool:
        return block.height <= self.height and self._active[block.height] is block

    def confirmations(self, block: Block) -> int:
        return self.height - block.height + 1 if self.is_active(block) else -1

    def stale_tips(self) -> list[Block]:
        """Blocks off the active chain that no other stale block builds on."""
        stale = [b for b in self._blocks.values() if not self.is_active(b)]
        parents = {b.header.prev for b in stale}
        return [b for b in stale if hex_to_hash(b.hash) not in parents]

    def median_time_past(self, height: int) -> int:
        times = sorted(b.header.time for b in self._active[max(0, height - 10):height + 1])
        return times[len(times) // 2]

    def utxo(self, outpoint: Outpoint) -> Coin | None:
        return self._utxo.get(outpoint)

    def utxos(self) -> Iterable[tuple[Outpoint, Coin]]:
        return self._utxo.items()

    def spent_coins(self, block: Block) -> list[list[Coin]]:
        """Per transaction of ``block``, the coins its inputs spent (undo data)."""
        return self._undo[block.hash]

    def find_tx(self, txid: str) -> tuple[Tx, Block | None] | None:
        entry = self.mempool.get(txid)
        if entry is not None:
            return entry.tx, None
        where = self._txindex.get(txid)
        if where is None:
            return None
        block = self._blocks[where[0]]
        return block.txs[where[1]], block

    def block_time(self, height: int) -> int:
        return GENESIS_TIME + BLOCK_INTERVAL * height

    def subsidy(self, height: int) -> int:
        halvings = height // self.halving_interval
        return 0 if halvings >= 64 else (50 * COIN) >> halvings

    # -- mempool ---------------------------------------------------------------------

    def submit(self, tx: Tx, *, max_fee: int | None = None) -> str:
        """``sendrawtransaction``: already-confirmed → -27, already in mempool → its txid."""
        if any((tx.txid, n) in self._utxo for n in range(len(tx.tx.vout))):
            raise TxRejected("already-in-utxo-set", code=-27,
                             message="Transaction outputs already in utxo set")
        if tx.txid in self.mempool:
            return tx.txid
        accept(self, self.mempool, tx, time=self.tip.header.time, policy=self.policy,
               max_fee=max_fee)
        return tx.txid

    def test_accept(self, txs: Sequence[Tx], *,
                    max_fee: int | None = None) -> list[AcceptResult | TxRejected]:
        """``testmempoolaccept``: each against a scratch mempool holding the ones before it."""
        scratch = self.mempool.copy()
        out: list[AcceptResult | TxRejected] = []
        for tx in txs:
            try:
                out.append(accept(self, scratch, tx, time=self.tip.header.time,
                                  policy=self.policy, max_fee=max_fee))
            except TxRejected as exc:
                out.append(exc)
        return out

    # -- blocks ----------------------------------------------------------------------

    def _coinbase(self, height: int, value: int, spk: bytes, txs: Sequence[Tx]) -> Tx:
        script_sig = _push_int(height) + (_push_int(self.branch) if self.branch else b"\x00")
        witness_root = merkle_root([b"\x00" * 32] + [t.wtxid_bytes for t in txs])
        commitment = sha256d(witness_root + _WITNESS_RESERVED)
        vin = [TransactionInput(b"\x00" * 32, 0xFFFFFFFF, Script(script_sig), 0xFFFFFFFF,
                                Witness([_WITNESS_RESERVED]))]
        vout = [TransactionOutput(value, Script(spk)),
                TransactionOutput(0, Script(b"\x6a\x24\xaa\x21\xa9\xed" + commitment))]
        return Tx.from_embit(Transaction(version=2, vin=vin, vout=vout, locktime=0))

    def _make_block(self, txs: Sequence[Tx], fees: int, spk: bytes) -> Block:
        height = self.height + 1
        coinbase = self._coinbase(height, self.subsidy(height) + fees, spk, txs)
        all_txs = (coinbase, *txs)
        merkle = merkle_root([t.txid_bytes for t in all_txs])
        prev = hex_to_hash(self.tip.hash)
        nonce = 0
        while True:
            header = Header(BLOCK_VERSION, prev, merkle, self.block_time(height), REGTEST_BITS,
                            nonce)
            if header.meets_target():
                return Block(header, all_txs, height)
            nonce += 1

    def _connect(self, block: Block) -> None:
        if block.header.prev != hex_to_hash(self.tip.hash) or block.height != self.height + 1:
            raise ChainStateError("block does not extend the tip")
        undo: list[list[Coin]] = []
        for pos, tx in enumerate(block.txs):
            spent: list[Coin] = []
            if pos > 0:
                for op in tx.outpoints():
                    coin = self._utxo.pop(op, None)
                    if coin is None:
                        raise ChainStateError(f"block spends missing output {op[0]}:{op[1]}")
                    spent.append(coin)
            undo.append(spent)
            for n, out in enumerate(tx.tx.vout):
                if not is_unspendable(out.script_pubkey.data):
                    self._utxo[(tx.txid, n)] = Coin(out.value, out.script_pubkey.data,
                                                    block.height, pos == 0)
            self._txindex[tx.txid] = (block.hash, pos)
        self._blocks[block.hash] = block
        self._undo[block.hash] = undo
        self._active.append(block)
        self.mempool.remove_for_block([t.txid for t in block.txs[1:]])
        for tx in block.txs[1:]:
            self.mempool.remove_conflicts_of(tx)

    def _disconnect_tip(self) -> Block:
        if self.height == 0:
            raise ChainStateError("cannot disconnect the genesis block")
        block = self._active.pop()
        undo = self._undo[block.hash]
        for pos in range(len(block.txs) - 1, -1, -1):
            tx = block.txs[pos]
            for n in range(len(tx.tx.vout)):
                self._utxo.pop((tx.txid, n), None)
            # The transaction index keeps the entry, as Bitcoin Core's does: a transaction of
            # a block that left the active chain is still found, in that stale block, with
            # ``confirmations: 0``, until another block or the mempool has it again.
            for op, coin in zip(tx.outpoints() if pos else [], undo[pos], strict=True):
                self._utxo[op] = coin
        return block

    def mine(self, n: int = 1, *, to_address: str | None = None) -> list[str]:
        """Mine ``n`` blocks (the first takes the whole mempool); return their hashes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ChainStateError("number of blocks must be a non-negative integer")
        spk = address_to_spk(to_address) if to_address else self.faucet.receive_spk
        hashes = []
        for _ in range(n):
            entries = list(self.mempool)
            block = self._make_block([e.tx for e in entries], sum(e.fee for e in entries), spk)
            self._connect(block)
            hashes.append(block.hash)
        return hashes

    def reorg(self, depth: int, *, drop_txids: Iterable[str] = ()) -> list[str]:
        """Replace the last ``depth`` blocks with ``depth + 1`` new ones.

        Transactions from the disconnected blocks go back to the mempool and are mined
        again in the first new block, except ``drop_txids`` and their descendants, which are
        dropped (from the mempool too). Transactions that were unconfirmed before the reorg
        stay unconfirmed."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ChainStateError("reorg depth must be a positive integer")
        if depth > self.height:
            raise ChainStateError(f"cannot reorg {depth} blocks deep at height {self.height}")
        drop = set(drop_txids)
        known = {t.txid for b in self._active[-depth:] for t in b.txs[1:]}
        known |= {e.txid for e in self.mempool}
        if drop - known:
            raise ChainStateError(f"not in the last {depth} blocks or the mempool: "
                                  f"{', '.join(sorted(drop - known))}")
        disconnected = [self._disconnect_tip() for _ in range(depth)][::-1]
        old_pool = self.mempool.clear()
        from_blocks = [t for b in disconnected for t in b.txs[1:]]
        dropped = set(drop)
        readded: set[str] = set()
        time = self.tip.header.time
        for tx, was_confirmed in [(t, True) for t in from_blocks] + \
                                 [(e.tx, False) for e in old_pool]:
            if tx.txid in dropped or any(op[0] in dropped for op in tx.outpoints()):
                dropped.add(tx.txid)
                continue
            try:
                accept(self, self.mempool, tx, time=time, policy=self.policy,
                       bypass_limits=True)
            except SimnetError:
                dropped.add(tx.txid)
                continue
            if was_confirmed:
                readded.add(tx.txid)
        self.branch += 1
        spk = self.faucet.receive_spk
        entries = [e for e in self.mempool if e.txid in readded]
        first = self._make_block([e.tx for e in entries], sum(e.fee for e in entries), spk)
        self._connect(first)
        hashes = [first.hash]
        for _ in range(depth):
            block = self._make_block([], 0, spk)
            self._connect(block)
            hashes.append(block.hash)
        return hashes

    # -- the faucet ------------------------------------------------------------------

    def pay(self, destination: str, amount_sat: int | None = None, *,
            feerate_sat_vb: int | Decimal | None = None, rbf: bool = True) -> str:
        """Pay an address or BIP21 URI from the faucet; return the txid (in the mempool)."""
        return _wallet.pay(self, destination, amount_sat, feerate_sat_vb=feerate_sat_vb,
                           rbf=rbf)

    def pay_many(self, outputs: Sequence[tuple[str, int]], *,
                 feerate_sat_vb: int | Decimal | None = None, rbf: bool = True) -> str:
        """One transaction paying every ``(address, sat)``; return its txid."""
        return _wallet.pay_many(self, outputs, feerate_sat_vb=feerate_sat_vb, rbf=rbf)

    def replace(self, txid: str, *, feerate_sat_vb: int | Decimal | None = None,
                new_outputs: Sequence[tuple[str, int]] | None = None) -> str:
        """RBF a faucet transaction in the mempool: same inputs, higher fee taken from the
        change (or ``new_outputs`` instead of the original payments); return the new txid."""
        return _wallet.replace(self, txid, feerate_sat_vb=feerate_sat_vb,
                               new_outputs=new_outputs)

    def double_spend(self, txid: str, *, to_address: str | None = None) -> str:
        """Replace a faucet transaction by one sending its inputs back to the faucet (or to
        ``to_address``); return the new txid."""
        return _wallet.double_spend(self, txid, to_address=to_address)

    def faucet_balance(self) -> FaucetBalance:
        return _wallet.balance(self)

    # -- persistence -----------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        from satvault.simnet._persist import save_chain

        save_chain(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Chain:
        from satvault.simnet._persist import load_chain

        return load_chain(Path(path))
