"""Saving and loading a chain: raw blocks and mempool transactions as hex, plus parameters,
in one JSON file, written atomically (temp file + rename).

Loading rebuilds the chain by connecting each saved block to a fresh genesis (links and
spends are checked, scripts are not re-verified) and re-admitting the mempool, so the best
block hash after a load is exactly the one saved. Stale (reorged-away) blocks are not saved.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from satvault.simnet._accept import Policy, accept
from satvault.simnet._primitives import Block
from satvault.simnet.errors import ChainStateError, SimnetError

if TYPE_CHECKING:
    from satvault.simnet.chain import Chain

__all__ = ["FORMAT", "load_chain", "save_chain"]

FORMAT = "satvault-simnet/1"


def save_chain(chain: Chain, path: Path) -> None:
    data: dict[str, Any] = {
        "format": FORMAT,
        "seed": chain.seed.hex(),
        "halving_interval": chain.halving_interval,
        "policy": {"min_relay_sat_kvb": chain.policy.min_relay_sat_kvb,
                   "incremental_relay_sat_kvb": chain.policy.incremental_relay_sat_kvb,
                   "dust_relay_sat_kvb": chain.policy.dust_relay_sat_kvb},
        "feerate_sat_kvb": chain.feerate_sat_kvb,
        "branch": chain.branch,
        "change_index": chain.faucet.change_index,
        "best_block_hash": chain.tip.hash,
        "blocks": [chain.block_at(h).serialize().hex()  # type: ignore[union-attr]
                   for h in range(1, chain.height + 1)],
        "mempool": [{"hex": e.tx.hex, "time": e.time} for e in chain.mempool],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def load_chain(path: Path) -> Chain:
    from satvault.simnet._primitives import Tx
    from satvault.simnet.chain import Chain

    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ChainStateError(f"{path} is not a simnet chain file")
    chain = Chain(bytes.fromhex(data["seed"]), initial_blocks=0,
                  policy=Policy(**data["policy"]), halving_interval=data["halving_interval"],
                  feerate_sat_vb=Decimal(data["feerate_sat_kvb"]) / 1000)
    chain.faucet.restore_change_keys(data["change_index"])
    for height, raw in enumerate(data["blocks"], start=1):
        chain._connect(Block.parse(bytes.fromhex(raw), height))
    chain.branch = data["branch"]
    if chain.tip.hash != data["best_block_hash"]:
        raise ChainStateError(f"{path}: replayed tip {chain.tip.hash} != saved tip")
    for item in data["mempool"]:
        try:
            accept(chain, chain.mempool, Tx.from_hex(item["hex"]), time=item["time"],
                   policy=chain.policy, bypass_limits=True)
        except SimnetError:
            continue
    return chain
