"""Assets and their smallest units.

Every account and transfer carries an asset code. Amounts are integers in the asset's smallest
unit: BTC in millisatoshi (1 BTC = 10^11 msat, so Lightning's msat precision is never rounded),
fiat in minor units with an explicit scale (``USD/2``: 1 USD = 100 cents), ETH in wei (10^18,
which overflows 64 bits, hence the NUMERIC(39,0) columns on PostgreSQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NewType

__all__ = ["ASSETS", "BTC", "Asset", "AssetCode", "MsatAmount", "asset_code", "get_asset"]

AssetCode = NewType("AssetCode", str)
MsatAmount = NewType("MsatAmount", int)

_CODE = re.compile(r"^[A-Z][A-Z0-9_.]{1,15}$")


@dataclass(frozen=True, slots=True)
class Asset:
    code: AssetCode
    unit: str
    scale: int  # smallest units per whole unit = 10**scale

    def format(self, amount: int) -> str:
        """Render an integer amount in whole units without ever passing through a float."""
        sign = "-" if amount < 0 else ""
        whole, frac = divmod(abs(amount), 10**self.scale)
        if self.scale == 0:
            return f"{sign}{whole} {self.code}"
        return f"{sign}{whole}.{frac:0{self.scale}d} {self.code}"


def asset_code(code: str) -> AssetCode:
    if not _CODE.match(code):
        raise ValueError(f"invalid asset code {code!r}: 2-16 upper-case letters, digits, _ or .")
    return AssetCode(code)


BTC = Asset(AssetCode("BTC"), "msat", 11)
ASSETS: dict[str, Asset] = {
    a.code: a
    for a in (
        BTC,
        Asset(AssetCode("ETH"), "wei", 18),
        Asset(AssetCode("USD"), "cent", 2),
        Asset(AssetCode("EUR"), "cent", 2),
        Asset(AssetCode("THB"), "satang", 2),
        Asset(AssetCode("JPY"), "yen", 0),
    )
}


def get_asset(code: str) -> Asset:
    try:
        return ASSETS[code]
    except KeyError:
        raise KeyError(f"unknown asset {code!r}") from None
