"""Offline cosigners for tests: fixed seeds, their BIP48 (P2WSH) account keys on regtest, and
the cold wallet's descriptor built from them, the way an operator would paste it in."""

from __future__ import annotations

from embit import bip32
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS

ACCOUNT = "m/48h/1h/0h/2h"
SEEDS = [bytes([0xC0 + i]) * 32 for i in range(5)]


def root(i: int) -> bip32.HDKey:
    return bip32.HDKey.from_seed(SEEDS[i], version=NETWORKS["regtest"]["xprv"])


def key_expression(i: int) -> str:
    r = root(i)
    xpub = r.derive(ACCOUNT).to_public().to_string(version=NETWORKS["regtest"]["xpub"])
    return f"[{r.my_fingerprint.hex()}{ACCOUNT[1:]}]{xpub}/<0;1>/*"


def cold_descriptor(m: int = 2, n: int = 3) -> str:
    keys = ",".join(key_expression(i) for i in range(n))
    return str(add_checksum(f"wsh(sortedmulti({m},{keys}))"))
