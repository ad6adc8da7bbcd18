"""What carrying each input's previous transaction (``non_witness_utxo``) costs a payout.

    python benchmarks/prevtx.py [--inputs 50] [--rounds 5]

For one payout batch of ``--inputs`` semi-cold coins paying 50 withdrawals plus change, built
with ``make_psbt`` and signed by an in-process ``HotSigner``, for previous transactions of
three shapes (witnesses stripped, as the builder stores them):

* ``1in-2out``: each coin from its own small transaction (a deposit, a refill's output);
* ``batch-20in-30out``: each coin from its own payout-sized transaction (a change output);
* ``one-100in-200out``: every coin from the same large transaction (BIP174 v0 carries it
  once per input, so it is repeated ``--inputs`` times);

and ``witness_utxo`` only (what the signer refuses now) as the baseline. Reported: the base64
PSBT's size, and the medians of build and sign time. Then the fetch: ``--inputs`` distinct
transactions read with ``BitcoindBackend.raw_transaction`` from simnet over HTTP, eight at a
time as ``PrevTxs.fetch`` does (the payout job reads its own moves' transactions from
``payout_txs`` instead: one SELECT).

Not a timed test. Progress on stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import statistics
import sys
import time

from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.backends.bitcoind import BitcoindBackend
from satvault.onchain.descriptors import parse_wallet
from satvault.signer import HotSigner
from satvault.signing import Payment, PsbtInput, PsbtOutput, accounts_from_descriptors
from satvault.signing.psbt import make_psbt
from satvault.simnet.chain import Chain
from satvault.simnet.rpc import SimnetServer

NETWORK = "regtest"
PAYMENTS = 50
STRANGER = b"\x00\x14" + bytes(range(20))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prev_tx(spk: bytes, value: int, vout: int, n_in: int, n_out: int, salt: bytes
            ) -> Transaction:
    vin = [TransactionInput(hashlib.sha256(salt + bytes([k % 256, k // 256])).digest(), k)
           for k in range(n_in)]
    outs = [TransactionOutput(10_000 + k, Script(STRANGER)) for k in range(n_out)]
    outs[vout] = TransactionOutput(value, Script(spk))
    return Transaction(version=2, vin=vin, vout=outs)


def coins(hot, n: int, shape: str) -> list[PsbtInput]:
    out = []
    shared = None
    for i in range(n):
        spk = hot.derive(i, change=1).script_pubkey
        value = 200_000 + i
        if shape == "one-100in-200out":
            if shared is None:
                shared = prev_tx(STRANGER, 1, 0, 100, 200, b"shared")
            shared.vout[i] = TransactionOutput(value, Script(spk))
            continue
        n_in, n_out = (1, 2) if shape == "1in-2out" else (20, 30)
        tx = prev_tx(spk, value, 1, n_in, n_out, f"{shape}{i}".encode())
        out.append(PsbtInput(bytes(tx.txid()).hex(), 1, value, spk, "hot", 1, i,
                             tx.serialize()))
    if shared is not None:
        raw, txid = shared.serialize(), bytes(shared.txid()).hex()
        out = [PsbtInput(txid, i, 200_000 + i, hot.derive(i, change=1).script_pubkey, "hot",
                         1, i, raw) for i in range(n)]
    return out


def bench_shape(signer: HotSigner, shape: str, n: int, rounds: int) -> dict[str, object]:
    descriptors = signer.descriptors()
    accounts = accounts_from_descriptors(descriptors, NETWORK)
    hot = parse_wallet(descriptors["hot"], NETWORK)
    baseline = shape == "witness_utxo only"
    inputs = coins(hot, n, "1in-2out" if baseline else shape)
    payments = [Payment(b"\x00\x14" + hashlib.sha256(bytes([k])).digest()[:20], 50_000 + k,
                        f"wd_{shape}_{k}") for k in range(PAYMENTS)]
    paid = sum(p.amount_sat for p in payments)
    fee = 20 * (11 + 68 * n + 31 * (PAYMENTS + 1))
    change = sum(i.value_sat for i in inputs) - paid - fee
    outputs = [PsbtOutput(p.script_pubkey, p.amount_sat) for p in payments]
    outputs.append(PsbtOutput(hot.derive(10_000, change=1).script_pubkey, change, 10_000))
    build, parse, sign = [], [], []
    psbt = ""
    for _ in range(rounds):
        t = time.perf_counter()
        psbt = make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=accounts)
        build.append(time.perf_counter() - t)
        if baseline:  # what the builder made before (the signer refuses it now)
            bare = PSBT.from_string(psbt)
            for scope in bare.inputs:
                scope.non_witness_utxo = None
            psbt = str(bare.to_base64())
        t = time.perf_counter()
        PSBT.from_string(psbt)  # the signer's first step
        parse.append(time.perf_counter() - t)
        if not baseline:
            t = time.perf_counter()
            signer.sign_payout(psbt, payments, max_fee_sat=10**7, max_feerate_sat_vb=1_000)
            sign.append(time.perf_counter() - t)
    return {"shape": shape, "inputs": n, "psbt_base64_bytes": len(psbt),
            "prev_tx_bytes": 0 if baseline else sum(len(i.prev_tx or b"") for i in inputs),
            "build_ms": None if baseline else round(statistics.median(build) * 1000, 2),
            "parse_ms": round(statistics.median(parse) * 1000, 2),
            "sign_ms": round(statistics.median(sign) * 1000, 2) if sign else None}


async def bench_fetch(n: int) -> dict[str, object]:
    chain = Chain()
    server = SimnetServer(chain, port=0, user="u", password="p").start()
    try:
        txids = [chain.pay(_address(k), 10_000 + k) for k in range(n)]
        chain.mine(1)
        backend = BitcoindBackend(server.url, retries=1, backoff=0.01)
        gate = asyncio.Semaphore(8)

        async def one(txid: str) -> int:
            async with gate:
                raw = await backend.raw_transaction(txid)
                assert raw is not None
                return len(raw)

        times = []
        for _ in range(3):
            t = time.perf_counter()
            sizes = await asyncio.gather(*(one(t) for t in txids))
            times.append(time.perf_counter() - t)
        await backend.close()
        return {"transactions": n, "bytes": sum(sizes),
                "fetch_ms": round(statistics.median(times) * 1000, 1)}
    finally:
        server.stop()


_OTHER = parse_wallet(HotSigner(bytes([7]) * 64, NETWORK).descriptors()["deposit"], NETWORK)


def _address(k: int) -> str:
    return _OTHER.derive(k).address


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    signer = HotSigner(bytes(range(64)), NETWORK)
    shapes = []
    for shape in ("witness_utxo only", "1in-2out", "batch-20in-30out", "one-100in-200out"):
        log(f"{shape}: {args.inputs} inputs")
        shapes.append(bench_shape(signer, shape, args.inputs, args.rounds))
        log(f"  {shapes[-1]}")
    log("fetch from simnet")
    fetch = asyncio.run(bench_fetch(args.inputs))
    log(f"  {fetch}")
    print(json.dumps({"benchmark": "prevtx", "python": platform.python_version(),
                      "machine": platform.machine(), "payments": PAYMENTS,
                      "shapes": shapes, "fetch": fetch}))


if __name__ == "__main__":
    main()
