"""Where the signer's keys live in its BIP32 tree.

One seed, two BIP84 accounts::

    m / 84' / c' / 0'   deposit   addresses customers pay to (receive chain 0)
    m / 84' / c' / 1'   hot       pays withdrawals; its change chain 1 receives the change

``c`` is the BIP44 coin type: 0 on mainnet, 1 on testnet, signet and regtest. Below an
account, ``chain/index`` is non-hardened (chain 0 receive, 1 change), so the web process can
derive every address from the account xpub alone.

This module is public and shared: the watch-only web side's PSBT builder
(:mod:`satvault.signing.psbt`) and the signer process's key tree (``satvault.signer._hd``)
both use it, so it holds no keys, only numbers.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CHANGE_CHAIN",
    "HARDENED",
    "NETWORKS",
    "PURPOSE_P2WPKH",
    "RECEIVE_CHAIN",
    "WalletName",
    "account_path",
    "coin_type",
    "format_path",
    "parse_path",
]

HARDENED = 0x80000000
PURPOSE_P2WPKH = 84
NETWORKS = ("mainnet", "testnet", "signet", "regtest")
RECEIVE_CHAIN = 0
CHANGE_CHAIN = 1


class WalletName(StrEnum):
    DEPOSIT = "deposit"
    HOT = "hot"

    @property
    def account(self) -> int:
        return 0 if self is WalletName.DEPOSIT else 1


def coin_type(network: str) -> int:
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}")
    return 0 if network == "mainnet" else 1


def account_path(network: str, wallet: WalletName) -> tuple[int, ...]:
    """The hardened account path, e.g. (84', 1', 0') for the regtest deposit wallet."""
    return (PURPOSE_P2WPKH + HARDENED, coin_type(network) + HARDENED, wallet.account + HARDENED)


def format_path(path: tuple[int, ...] | list[int], *, prefix: str = "m",
                hardened_mark: str = "'") -> str:
    steps = [f"{s - HARDENED}{hardened_mark}" if s >= HARDENED else str(s) for s in path]
    return "/".join([prefix, *steps]) if prefix else "/".join(steps)


def parse_path(text: str) -> tuple[int, ...]:
    """``m/84'/1'/0'`` or ``84h/1h/0h`` to integers (raises ValueError)."""
    steps = [s for s in text.strip().split("/") if s not in ("m", "")]
    out = []
    for s in steps:
        hard = s[-1] in "'hH"
        n = int(s[:-1] if hard else s)
        if not 0 <= n < HARDENED:
            raise ValueError(f"path step {s!r} out of range")
        out.append(n + HARDENED if hard else n)
    return tuple(out)
