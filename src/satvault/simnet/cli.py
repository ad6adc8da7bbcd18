"""``satvault simnet …``: drive a running simnet over its JSON-RPC, or run one.

Every command prints one JSON object on stdout (``{"ok": true, …}`` or ``{"ok": false,
"error": …}`` with exit status 1). The node is found at ``--rpc-url``, else
``$SATVAULT_BITCOIND_URL``, else ``http://simnet:simnet@127.0.0.1:18443/``; credentials in
the URL are sent as HTTP Basic auth.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from satvault.simnet.chain import DEFAULT_SEED, Chain
from satvault.simnet.rpc import SimnetServer, dumps

__all__ = ["DEFAULT_RPC_URL", "RpcCallError", "app", "rpc_call"]

DEFAULT_RPC_URL = "http://simnet:simnet@127.0.0.1:18443/"

app = typer.Typer(help="The built-in regtest simulator (simnet).", no_args_is_help=True,
                  add_completion=False)

RpcUrl = Annotated[str, typer.Option("--rpc-url", envvar="SATVAULT_BITCOIND_URL",
                                     help="JSON-RPC URL of the simnet (user:pass@host:port).")]


class RpcCallError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


def rpc_call(url: str, method: str, params: list[Any] | None = None, *,
             timeout: float = 30.0) -> Any:
    """One JSON-RPC 1.0 call; returns ``result`` or raises RpcCallError."""
    parsed = httpx.URL(url)
    auth = (parsed.username, parsed.password) if parsed.username else None
    target = parsed.copy_with(username=None, password=None)
    payload = {"jsonrpc": "1.0", "id": "satvault", "method": method, "params": params or []}
    try:
        resp = httpx.post(target, content=dumps(payload), auth=auth, timeout=timeout,
                          headers={"Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        raise RpcCallError(f"cannot reach the node at {target}: {exc}") from exc
    if resp.status_code == 401:
        raise RpcCallError("the node refused the RPC credentials (HTTP 401)")
    try:
        body = json.loads(resp.text, parse_float=Decimal)
    except ValueError as exc:
        raise RpcCallError(f"HTTP {resp.status_code}: not a JSON-RPC reply") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if error:
        raise RpcCallError(str(error.get("message")), error.get("code"))
    return body.get("result")


def _emit(obj: Any) -> None:
    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


def _run(url: str, method: str, params: list[Any], shape: Any) -> None:
    try:
        result = rpc_call(url, method, params)
    except RpcCallError as exc:
        _emit({"ok": False, "error": str(exc), "code": exc.code})
        raise typer.Exit(1) from exc
    _emit({"ok": True, **shape(result)})


@app.command()
def pay(destination: Annotated[str, typer.Argument(help="Regtest address or BIP21 URI.")],
        amount_sat: Annotated[int | None, typer.Argument(help="Satoshis (overrides amount=).")]
        = None,
        feerate: Annotated[str | None, typer.Option(help="sat/vB (default: the estimate).")]
        = None,
        no_rbf: Annotated[bool, typer.Option("--no-rbf", help="Do not signal RBF.")] = False,
        rpc_url: RpcUrl = DEFAULT_RPC_URL) -> None:
    """Pay from the faucet; the transaction waits in the mempool until `mine`."""
    rate = Decimal(feerate) if feerate is not None else None
    _run(rpc_url, "simnet_pay", [destination, amount_sat, rate, not no_rbf],
         lambda txid: {"txid": txid})


@app.command()
def mine(n: Annotated[int, typer.Argument(help="Number of blocks.")] = 1,
         address: Annotated[str | None, typer.Option(help="Coinbase address.")] = None,
         rpc_url: RpcUrl = DEFAULT_RPC_URL) -> None:
    """Mine blocks (the first takes the whole mempool)."""
    _run(rpc_url, "simnet_mine", [n, address], lambda hashes: {"blocks": hashes})


@app.command()
def reorg(depth: Annotated[int, typer.Argument(help="Blocks to replace.")],
          drop: Annotated[list[str] | None, typer.Option(help="Txid to drop (repeatable).")]
          = None,
          rpc_url: RpcUrl = DEFAULT_RPC_URL) -> None:
    """Replace the last DEPTH blocks by DEPTH+1 new ones."""
    _run(rpc_url, "simnet_reorg", [depth, drop or []], lambda hashes: {"blocks": hashes})


@app.command()
def balance(rpc_url: RpcUrl = DEFAULT_RPC_URL) -> None:
    """The faucet's balance."""
    _run(rpc_url, "simnet_faucet_balance", [], lambda result: result)


@app.command()
def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port (18443 is regtest's).")] = 18443,
          data: Annotated[Path | None, typer.Option(help="Chain file: loaded if present, "
                                                         "saved after every change.")] = None,
          user: Annotated[str, typer.Option(help="RPC user.")] = "simnet",
          password: Annotated[str, typer.Option(help="RPC password.")] = "simnet",
          cookie: Annotated[Path | None, typer.Option(help="Also write a bitcoind-style "
                                                           "cookie file here.")] = None,
          seed: Annotated[str, typer.Option(help="Chain seed (new chains only).")]
          = DEFAULT_SEED.decode()) -> None:
    """Run a simnet node in the foreground until interrupted."""
    if data is not None and data.exists():
        chain = Chain.load(data)
    else:
        chain = Chain(seed)
        if data is not None:
            chain.save(data)
    server = SimnetServer(chain, host=host, port=port, user=user, password=password,
                          cookie_path=cookie, data_path=data)
    try:
        server.start()
    except OSError as exc:
        _emit({"ok": False, "error": f"cannot listen on {host}:{port}: {exc}"})
        raise typer.Exit(1) from exc
    _emit({"ok": True, "url": server.base_url, "user": user, "port": server.port,
           "height": chain.height, "bestblockhash": chain.tip.hash,
           "faucet_address": chain.faucet.receive_address})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
