"""The simulator's default picture and one node's mutable state (keys, invoices, payments,
counters). Internal to :class:`~satvault.simnet.ln.network.LnNetwork`, which guards it with its
lock."""

from __future__ import annotations

from coincurve import PrivateKey

from satvault.simnet.ln._model import ChannelSpec, Invoice, Payment

__all__ = ["DEFAULT_ALIASES", "DEFAULT_CHANNELS", "DEFAULT_NODES", "DEFAULT_ONCHAIN_SAT",
           "DEFAULT_SEED", "FEE_BASE_MSAT", "FEE_PPM", "MAX_MEMO", "NodeState"]

DEFAULT_SEED = "satvault-simnet-ln"
DEFAULT_NODES = ("platform", "customer1", "customer2", "router")
DEFAULT_ALIASES = {"router": "charlie"}
_BTC = 100_000_000_000  # msat
DEFAULT_CHANNELS = (
    ChannelSpec("customer1", "router", _BTC // 20, _BTC // 20),
    ChannelSpec("customer2", "router", _BTC // 20, _BTC // 20),
    ChannelSpec("router", "platform", _BTC // 10, _BTC // 10),
    ChannelSpec("customer1", "platform", _BTC // 50, _BTC // 50),
)
DEFAULT_ONCHAIN_SAT = {"platform": 100_000_000, "customer1": 50_000_000,
                       "customer2": 50_000_000, "router": 0}
FEE_BASE_MSAT = 1000
FEE_PPM = 1000
MAX_MEMO = 639


class NodeState:
    __slots__ = ("add_index", "alias", "fee_base_msat", "fee_ppm", "invoices", "key", "labels",
                 "name", "next_secret", "onchain_sat", "payment_index", "payments", "pubkey",
                 "settle_index", "settled")

    def __init__(self, name: str, key: PrivateKey, alias: str, onchain_sat: int) -> None:
        self.name = name
        self.key = key
        self.pubkey = key.public_key.format(compressed=True).hex()
        self.alias = alias
        self.onchain_sat = onchain_sat
        self.fee_base_msat = FEE_BASE_MSAT
        self.fee_ppm = FEE_PPM
        self.invoices: dict[str, Invoice] = {}  # by payment hash, in add order
        self.labels: dict[str, str] = {}  # label -> payment hash
        self.settled: list[str] = []  # payment hashes in settle order (settle_index - 1)
        self.payments: dict[str, Payment] = {}  # outgoing, by payment hash
        self.add_index = 0
        self.settle_index = 0
        self.payment_index = 0
        self.next_secret = 0
