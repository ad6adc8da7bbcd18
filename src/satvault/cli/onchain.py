"""``satvault onchain …``: operator tools for the on-chain side."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from satvault.config import get_settings
from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.errors import OnchainError

__all__ = ["app"]

app = typer.Typer(help="On-chain Bitcoin tools.", no_args_is_help=True)


@app.command("addresses")
def addresses(
    wallet: Annotated[str, typer.Argument(help="Account xpub/ypub/zpub/tpub/vpub or descriptor.")],
    count: Annotated[int, typer.Option(min=1, max=10_000, help="How many.")] = 10,
    start: Annotated[int, typer.Option(min=0, help="First index.")] = 0,
    change: Annotated[bool, typer.Option(help="The change chain (1) instead of receive (0).")
                      ] = False,
    network: Annotated[str | None, typer.Option(help="mainnet, testnet, signet or regtest "
                                                     "(default: the configured network).")
                       ] = None,
) -> None:
    """Print the first addresses of a watch-only wallet, to compare with the hardware wallet
    before going live."""
    net = network or get_settings().network
    try:
        w = parse_wallet(wallet, net)
    except OnchainError as exc:
        sys.stdout.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        raise typer.Exit(1) from None
    chain = 1 if change else 0
    rows = [{"index": d.index, "path": f"{chain}/{d.index}", "address": d.address}
            for d in w.derive_range(start, count, change=chain)]
    sys.stdout.write(json.dumps({"ok": True, "network": net, "descriptor": w.descriptor(),
                                 "addresses": rows}) + "\n")


@app.command("hot-address")
def hot_address() -> None:
    """A fresh receive address of the hot wallet, to fund it directly (on simnet:
    `satvault simnet pay <address> <sat>`). Coins sent here are booked as operator equity."""
    import asyncio

    from satvault.composition import open_database
    from satvault.migrate import ensure_current
    from satvault.onchain.bip21 import make_bip21
    from satvault.onchain.service import allocate_address

    settings = get_settings()

    async def go() -> tuple[str, int]:
        engine, sessions = open_database(settings, pool_size=1)
        try:
            await ensure_current(engine)
            async with sessions() as s, s.begin():
                a = await allocate_address(s, role="hot", owner_type="platform", owner_id="hot",
                                           purpose="funding", request_id=None)
                return a.address, a.index
        finally:
            await engine.dispose()

    from satvault.migrate import SchemaNotCurrent

    try:
        address, index = asyncio.run(go())
    except SchemaNotCurrent as exc:
        sys.stdout.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        raise typer.Exit(2) from None
    except OnchainError as exc:
        sys.stdout.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps({"ok": True, "address": address, "path": f"0/{index}",
                                 "bip21": make_bip21(address, label="satvault hot wallet")})
                     + "\n")
