"""On-chain Bitcoin: watch-only deposit wallets, addresses, BIP21, QR codes (and, as the
on-chain issue proceeds, the chain watcher, PSBTs and payouts)."""

from satvault.onchain.addresses import AddressInfo, parse_address, script_to_address
from satvault.onchain.bip21 import PaymentUri, make_bip21, parse_bip21
from satvault.onchain.descriptors import DerivedAddress, ScriptKind, WatchOnlyWallet, parse_wallet

__all__ = [
    "AddressInfo",
    "DerivedAddress",
    "PaymentUri",
    "ScriptKind",
    "WatchOnlyWallet",
    "make_bip21",
    "parse_address",
    "parse_bip21",
    "parse_wallet",
    "script_to_address",
]
