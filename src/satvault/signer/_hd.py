"""The private half of the key tree: a BIP32 root from the seed and its two account keys.

Only the signer imports this module. Account keys are derived once (three hardened steps
each); child keys below them are derived per signing and never stored.
"""

from __future__ import annotations

from embit import bip32, ec
from embit.networks import NETWORKS

from satvault.onchain.keys import hash160
from satvault.signing.paths import (
    CHANGE_CHAIN,
    HARDENED,
    RECEIVE_CHAIN,
    WalletName,
    account_path,
    coin_type,
)

__all__ = ["Keyring", "p2wpkh_script"]


def p2wpkh_script(pubkey: bytes) -> bytes:
    return b"\x00\x14" + hash160(pubkey)


def _versions(network: str) -> tuple[bytes, bytes]:
    net = NETWORKS["main" if coin_type(network) == 0 else "test"]
    return net["xprv"], net["xpub"]


class Keyring:
    """Root and account keys of one seed on one network. Holds private keys: keep it in the
    signer process, never log or serialise it."""

    __slots__ = ("_accounts", "_root", "fingerprint", "network")

    def __init__(self, seed: bytes, network: str) -> None:
        xprv, _ = _versions(network)
        self.network = network
        self._root = bip32.HDKey.from_seed(seed, version=xprv)
        self.fingerprint: bytes = self._root.my_fingerprint
        self._accounts = {w: self._root.derive(list(account_path(network, w)))
                          for w in WalletName}

    def __repr__(self) -> str:  # never show key material
        return f"Keyring(fingerprint={self.fingerprint.hex()}, network={self.network})"

    def account_xpub(self, wallet: WalletName) -> str:
        """The account's extended public key as ``xpub``/``tpub`` (what descriptors carry)."""
        _, xpub = _versions(self.network)
        return str(self._accounts[wallet].to_public(version=xpub).to_base58())

    def _child(self, wallet: WalletName, chain: int, index: int) -> bip32.HDKey:
        if chain not in (RECEIVE_CHAIN, CHANGE_CHAIN):
            raise ValueError(f"chain {chain} is neither receive (0) nor change (1)")
        if not 0 <= index < HARDENED:
            raise ValueError(f"index {index} is not a non-hardened index")
        return self._accounts[wallet].derive([chain, index])

    def public_key(self, wallet: WalletName, chain: int, index: int) -> bytes:
        return bytes(self._child(wallet, chain, index).sec())

    def private_key(self, wallet: WalletName, chain: int, index: int) -> ec.PrivateKey:
        return self._child(wallet, chain, index).key
