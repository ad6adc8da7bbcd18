"""``satvault simnet ln-…``: drive a running Lightning simulator, or run one.

Every command prints one JSON object (``{"ok": true, …}``, or ``{"ok": false, "error": …}``
with exit status 1). The simulator is found at ``--url``, else ``$SATVAULT_LND_URL``, else
``http://127.0.0.1:18080``; the commands use its ``/simnet/…`` control API.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from satvault.simnet.ln.cln_rpc import ClnRpcServer
from satvault.simnet.ln.lnd_rest import LndRestServer
from satvault.simnet.ln.network import DEFAULT_SEED, LnNetwork

__all__ = ["DEFAULT_URL", "app"]

DEFAULT_URL = "http://127.0.0.1:18080"

app = typer.Typer(help="The Lightning simulator.", no_args_is_help=True,
                  add_completion=False)

Url = Annotated[str, typer.Option("--url", envvar="SATVAULT_LND_URL",
                                  help="The simulator's REST URL.")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _post(url: str, path: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    try:
        resp = httpx.post(url.rstrip("/") + path, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        _emit({"ok": False, "error": f"cannot reach the simulator at {url}: {exc}"})
        raise typer.Exit(1) from exc
    try:
        out = resp.json()
    except ValueError as exc:
        _emit({"ok": False, "error": f"HTTP {resp.status_code}: not JSON"})
        raise typer.Exit(1) from exc
    if resp.status_code >= 400 or not isinstance(out, dict):
        err = out.get("error", {}) if isinstance(out, dict) else {}
        _emit({"ok": False, "error": err.get("message", str(out)), "kind": err.get("kind")})
        raise typer.Exit(1)
    return out


@app.command("ln-pay")
def ln_pay(bolt11: Annotated[str, typer.Argument(help="The invoice to pay.")],
           sender: Annotated[str, typer.Option("--from", help="Paying node.")] = "customer1",
           amount_msat: Annotated[int | None, typer.Option(
               help="Amount, for an amountless invoice (or to under/over-pay).")] = None,
           wait: Annotated[float, typer.Option(help="Seconds to wait for a final state.")]
           = 10.0,
           url: Url = DEFAULT_URL) -> None:
    """A simulated node pays BOLT11 (a customer paying a platform invoice)."""
    body: dict[str, Any] = {"bolt11": bolt11, "from": sender, "wait": wait}
    if amount_msat is not None:
        body["amount_msat"] = amount_msat
    payment = _post(url, "/simnet/pay", body, timeout=wait + 30)["payment"]
    _emit({"ok": payment["status"] != "FAILED", **payment})
    if payment["status"] == "FAILED":
        raise typer.Exit(1)


@app.command("ln-invoice")
def ln_invoice(amount_msat: Annotated[int, typer.Option(help="Amount (0: amountless).")],
               node: Annotated[str, typer.Option(help="Issuing node.")] = "customer1",
               memo: Annotated[str, typer.Option(help="Description.")] = "",
               expiry: Annotated[int, typer.Option(help="Seconds.")] = 3600,
               url: Url = DEFAULT_URL) -> None:
    """A simulated node issues an invoice (one the platform can pay)."""
    out = _post(url, "/simnet/invoice", {"node": node, "amount_msat": amount_msat,
                                         "memo": memo, "expiry": expiry})
    _emit({"ok": True, **out})


@app.command("ln-serve")
def ln_serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
             port: Annotated[int, typer.Option(help="LND REST port.")] = 18080,
             seed: Annotated[str, typer.Option(help="Network seed (keys, preimages).")]
             = DEFAULT_SEED,
             node: Annotated[str, typer.Option(help="The node LND REST serves.")] = "platform",
             macaroon_hex: Annotated[str | None, typer.Option(
                 help="Require this macaroon (hex) on LND calls.")] = None,
             cln_socket: Annotated[Path | None, typer.Option(
                 help="Also serve Core Lightning's RPC for the node on this socket.")] = None
             ) -> None:
    """Run the Lightning simulator in the foreground until interrupted."""
    network = LnNetwork(seed=seed)
    lnd = LndRestServer(network, node=node, host=host, port=port, macaroon_hex=macaroon_hex)
    cln = ClnRpcServer(network, node=node, path=cln_socket) if cln_socket else None
    try:
        lnd.start()
        if cln is not None:
            cln.start()
    except OSError as exc:
        lnd.stop()
        _emit({"ok": False, "error": f"cannot listen: {exc}"})
        raise typer.Exit(1) from exc
    _emit({"ok": True, "url": lnd.url, "node": node, "pubkey": network.pubkey(node),
           "network": network.network, "cln_socket": str(cln.path) if cln else None,
           "nodes": {n: network.pubkey(n) for n in network.node_names}})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if cln is not None:
            cln.stop()
        lnd.stop()
        network.close()
