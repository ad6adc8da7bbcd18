"""The servers ``benchmarks/floor.py`` measures: the least an API endpoint built on satvault's
stack costs, one layer at a time. Not satvault: a FastAPI app of a few lines, served by
uvicorn exactly as ``satvault serve`` serves (uvloop, httptools, no access log, the collector
tuned as ``satvault.web.app.tune_gc`` tunes it). ``FLOOR_LEVEL`` says how much it does per
``POST /v1/invoices``, each level adding to the one before:

- ``bare``: the route answers a constant JSON object (no body, no headers read);
- ``api``: a JSON body validated by a pydantic model, a bearer token looked up in memory (a
  principal cache's hit), a typed answer (``response_model``);
- ``db``: one INSERT of the invoice's row through SQLAlchemy Core on asyncpg, statement built
  once, in its own transaction (``BEGIN``, ``INSERT``, ``COMMIT``);
- ``node``: before the INSERT, one call to a node over HTTP with httpx on aiohttp's transport
  (keep-alive; satvault's LND client's default), as an invoice asks a Lightning node for its
  BOLT11 (``FLOOR_NODE_URL``; the answer is stored);
- ``pay``: ``POST /v1/payments`` instead, an internal payment's shape: ``api``'s work, the
  node call (the invoice taken off the node), then one transaction of seven statements, as
  many as satvault's payment has on PostgreSQL: the payer's row locked, the withdrawal
  INSERTed, the bill marked paid, the two balances UPDATEd (the payer's with a check that it
  stays ≥ 0), one outbox event and the idempotency key INSERTed. No rules, no limits, no
  ledger history: the least a payment can be on this stack;
- ``pay2``: ``pay`` in two statements: the payer's row locked (as screening does), then the
  six others as one (data-modifying ``WITH``), in one transaction;
- ``pay1``: ``pay`` with its seven statements as one (data-modifying ``WITH``), sent alone
  in autocommit: the payer's row is locked for one round trip, not seven (what a whole
  payment in one server-side call would give);
- ``paygroup``: ``pay``'s seven statements, but for every payment of one payer waiting in
  this process at once (group commit): the payer's row locked once, its balance read, the
  payments that fit taken in order (the rest refused, as a screening under the lock would),
  then one multi-row statement per table and one ``COMMIT`` for the group. What the lever
  "group commit of one payer's payments" gives at most on this stack;
- ``paygroupseq``: ``paygroup``'s groups, but each payment of a group written as in ``pay``
  (its six statements, in a ``SAVEPOINT`` of its own so that a refusal would undo only it),
  one lock and one ``COMMIT`` per group: group commit without multi-row statements.

``node_app`` is that node: a bare ASGI app answering a constant invoice, run apart so that its
CPU is counted apart (as the simulators' is in ``api.py``)."""

import gc
import hashlib
import os
import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

LEVELS = ("bare", "api", "db", "node", "pay", "pay2", "pay1", "paygroup", "paygroupseq")
PAYEE, BILLS, PAYERS = "payee", 1_000, 64  # payers: "payer-0" … "payer-63"
# which wallet a payer pays: the one payee (every payment credits its row), or, with
# FLOOR_PAYEES=own, a payee of its own ("payee-<n>" for "payer-<n>": no row is shared)
TOKEN = "floor-token"  # the benchmark's client sends it; only its hash is kept
_NODE_ANSWER = (b'{"r_hash":"' + b"00" * 32 + b'","payment_request":"lnbcrt10n1' + b"q" * 280
                + b'","add_index":"1"}')


class InvoiceIn(BaseModel):
    amount_msat: int = Field(gt=0, le=2_100_000_000_000_000_000)
    memo: str = Field(default="", max_length=640)


class PaymentIn(BaseModel):
    bill: int = Field(ge=0, lt=BILLS)
    payer: int = Field(default=0, ge=0, lt=PAYERS)  # which wallet pays
    amount_msat: int = Field(gt=0, le=2_100_000_000_000_000_000)


class PaymentOut(BaseModel):
    id: str
    status: str
    amount_msat: int
    balance_msat: int


class InvoiceOut(BaseModel):
    id: str
    status: str
    amount_msat: int
    memo: str
    bolt11: str | None


def _create() -> Any:
    level = os.environ.get("FLOOR_LEVEL", "bare")
    if level not in LEVELS:
        raise SystemExit(f"FLOOR_LEVEL must be one of {LEVELS}")
    app = FastAPI()

    if level == "bare":
        @app.post("/v1/invoices")
        async def bare() -> dict[str, Any]:
            return {"id": "inv", "status": "open"}
        return app

    keys = {hashlib.sha256(TOKEN.encode()).hexdigest(): "wallet-1"}

    async def principal(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, token = authorization.partition(" ")
        owner = keys.get(hashlib.sha256(token.encode()).hexdigest()) \
            if scheme.lower() == "bearer" else None
        if owner is None:
            raise HTTPException(401, "unauthorized")
        return owner

    write: Any = None
    node: Any = None
    if level in ("paygroup", "paygroupseq"):
        return _pay_app(app, principal, trips=0 if level == "paygroup" else -1)
    if level.startswith("pay"):
        return _pay_app(app, principal, trips=int(level[3:] or 7))
    if level in ("db", "node"):
        from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=20)
        table = Table("floor_invoices", MetaData(), Column("id", String, primary_key=True),
                      Column("wallet", String), Column("amount_msat", BigInteger),
                      Column("memo", String), Column("bolt11", String))
        stmt = insert(table)

        async def write(row: dict[str, Any]) -> None:
            async with engine.begin() as conn:
                await conn.execute(stmt, row)
    if level == "node":
        node = _node_client()

    @app.post("/v1/invoices", response_model=InvoiceOut, status_code=201)
    async def create(body: InvoiceIn, owner: Annotated[str, Depends(principal)]
                     ) -> InvoiceOut:
        bolt11 = None
        if node is not None:
            r = await node.post("/v1/invoices", json={"value_msat": body.amount_msat,
                                                      "memo": body.memo})
            r.raise_for_status()
            bolt11 = r.json()["payment_request"]
        out = InvoiceOut(id=secrets.token_hex(12), status="open",
                         amount_msat=body.amount_msat, memo=body.memo, bolt11=bolt11)
        if write is not None:
            await write({"id": out.id, "wallet": owner, "amount_msat": out.amount_msat,
                         "memo": out.memo, "bolt11": bolt11})
        return out

    return app


def _node_client() -> Any:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    # satvault's LND client's default: httpx's API on aiohttp's pool and parser
    return httpx.AsyncClient(base_url=os.environ["FLOOR_NODE_URL"], timeout=30.0,
                             transport=AiohttpTransport())


def _pay_app(app: Any, principal: Any, *, trips: int) -> Any:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=20)
    node = _node_client()
    own_payees = os.environ.get("FLOOR_PAYEES") == "own"
    lock = text("SELECT balance_msat FROM floor_wallets WHERE id = :w FOR UPDATE")
    withdrawal = text("INSERT INTO floor_withdrawals (id, wallet, bill, amount_msat) "
                      "VALUES (:id, :w, :bill, :amt)")
    bill = text("UPDATE floor_bills SET paid = paid + 1 WHERE id = :bill")
    debit = text("UPDATE floor_wallets SET balance_msat = balance_msat - :amt WHERE id = :w "
                 "RETURNING balance_msat")
    credit = text("UPDATE floor_wallets SET balance_msat = balance_msat + :amt WHERE id = :w")
    event = text("INSERT INTO floor_outbox (subject, payload) VALUES (:id, :payload)")
    key = text("INSERT INTO floor_keys (owner, key, response) VALUES (:w, :key, :response)")
    whole = text(
        "WITH d AS (UPDATE floor_wallets SET balance_msat = balance_msat - :amt WHERE id = :w "
        "RETURNING balance_msat), "
        "x AS (INSERT INTO floor_withdrawals (id, wallet, bill, amount_msat) "
        "SELECT :id, :w, :bill, :amt FROM d), "
        "b AS (UPDATE floor_bills SET paid = paid + 1 WHERE id = :bill AND EXISTS "
        "(SELECT FROM d)), "
        "c AS (UPDATE floor_wallets SET balance_msat = balance_msat + :amt WHERE id = :payee "
        "AND EXISTS (SELECT FROM d)), "
        "e AS (INSERT INTO floor_outbox (subject, payload) SELECT :id, :payload FROM d), "
        "k AS (INSERT INTO floor_keys (owner, key, response) SELECT :w, :key, :payload FROM d) "
        "SELECT balance_msat FROM d")
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    grouped = _grouped(engine, lock, one_by_one=(withdrawal, bill, event, key) if trips < 0
                       else None) if trips <= 0 else None

    @app.post("/v1/payments", response_model=PaymentOut, status_code=201)
    async def pay(body: PaymentIn, _: Annotated[str, Depends(principal)],
                  idempotency_key: Annotated[str, Header()]) -> PaymentOut:
        owner = f"payer-{body.payer}"
        payee = f"payee-{body.payer}" if own_payees else PAYEE
        r = await node.delete(f"/v1/invoices/{body.bill}")
        r.raise_for_status()
        wid = secrets.token_hex(12)
        if grouped is not None:
            left = await grouped(owner, payee, (wid, body.bill, body.amount_msat,
                                                idempotency_key))
            if left is None:
                raise HTTPException(409, "insufficient balance")
            return PaymentOut(id=wid, status="confirmed", amount_msat=body.amount_msat,
                              balance_msat=left)
        if trips in (1, 2):  # the six writes as one statement (its answer's balance unknown)
            params = {"id": wid, "w": owner, "bill": body.bill, "amt": body.amount_msat,
                      "payee": payee, "key": idempotency_key,
                      "payload": PaymentOut(id=wid, status="confirmed",
                                            amount_msat=body.amount_msat,
                                            balance_msat=-1).model_dump_json()}
            if trips == 2:
                async with engine.begin() as conn:
                    await conn.execute(lock, {"w": owner})
                    left = (await conn.execute(whole, params)).scalar_one()
            else:
                async with autocommit.connect() as conn:
                    left = (await conn.execute(whole, params)).scalar_one()
            return PaymentOut(id=wid, status="confirmed", amount_msat=body.amount_msat,
                              balance_msat=left)
        async with engine.begin() as conn:
            await conn.execute(lock, {"w": owner})
            await conn.execute(withdrawal, {"id": wid, "w": owner, "bill": body.bill,
                                            "amt": body.amount_msat})
            await conn.execute(bill, {"bill": body.bill})
            left = (await conn.execute(debit, {"amt": body.amount_msat, "w": owner})
                    ).scalar_one()
            await conn.execute(credit, {"amt": body.amount_msat, "w": payee})
            out = PaymentOut(id=wid, status="confirmed", amount_msat=body.amount_msat,
                             balance_msat=left)
            answer = out.model_dump_json()
            await conn.execute(event, {"id": wid, "payload": answer})
            await conn.execute(key, {"w": owner, "key": idempotency_key, "response": answer})
        return out

    return app


def _grouped(engine: Any, lock: Any, one_by_one: tuple[Any, ...] | None) -> Any:
    """``paygroup``'s group commit: a payment joins its payer's queue; whoever finds no group
    running for that payer runs groups until the queue is empty, each in one transaction."""
    import asyncio

    from sqlalchemy import text

    arrays = ("CAST(:ids AS varchar[]), CAST(:bills AS int[]), CAST(:amts AS bigint[]), "
              "CAST(:keys AS varchar[]), CAST(:payloads AS varchar[])")
    many = text(
        "WITH p AS (SELECT * FROM unnest(" + arrays + ") AS p(id, bill, amt, key, payload)), "
        "x AS (INSERT INTO floor_withdrawals (id, wallet, bill, amount_msat) "
        "SELECT id, :w, bill, amt FROM p), "
        "b AS (UPDATE floor_bills SET paid = paid + n.n FROM (SELECT bill, count(*) AS n "
        "FROM p GROUP BY bill) n WHERE floor_bills.id = n.bill), "
        "e AS (INSERT INTO floor_outbox (subject, payload) SELECT id, payload FROM p) "
        "INSERT INTO floor_keys (owner, key, response) SELECT :w, key, payload FROM p")
    debit = text("UPDATE floor_wallets SET balance_msat = balance_msat - :amt WHERE id = :w")
    credit = text("UPDATE floor_wallets SET balance_msat = balance_msat + :amt WHERE id = :w")
    queues: dict[str, list[tuple[tuple[Any, ...], str, Any]]] = {}

    async def run_group(owner: str, group: list[tuple[tuple[Any, ...], str, Any]]) -> None:
        async with engine.begin() as conn:
            left = (await conn.execute(lock, {"w": owner})).scalar_one()
            taken, answers = [], []
            for item, payee, fut in group:
                wid, bill, amt, key = item
                if amt > left:
                    fut.set_result(None)
                    continue
                left -= amt
                answers.append((fut, left))
                taken.append((wid, bill, amt, key, payee, PaymentOut(
                    id=wid, status="confirmed", amount_msat=amt,
                    balance_msat=left).model_dump_json()))
            if taken and one_by_one is not None:  # paygroupseq
                withdrawal, bill, event, key = one_by_one
                for wid, bill_id, amt, key_text, payee, answer in taken:
                    async with conn.begin_nested():
                        await conn.execute(withdrawal, {"id": wid, "w": owner,
                                                        "bill": bill_id, "amt": amt})
                        await conn.execute(bill, {"bill": bill_id})
                        await conn.execute(debit, {"w": owner, "amt": amt})
                        await conn.execute(credit, {"w": payee, "amt": amt})
                        await conn.execute(event, {"id": wid, "payload": answer})
                        await conn.execute(key, {"w": owner, "key": key_text,
                                                 "response": answer})
            elif taken:
                await conn.execute(many, {
                    "w": owner, "ids": [t[0] for t in taken], "bills": [t[1] for t in taken],
                    "amts": [t[2] for t in taken], "keys": [t[3] for t in taken],
                    "payloads": [t[5] for t in taken]})
                await conn.execute(debit, {"w": owner, "amt": sum(t[2] for t in taken)})
                per_payee: dict[str, int] = {}
                for t in taken:
                    per_payee[t[4]] = per_payee.get(t[4], 0) + t[2]
                for payee, amt in sorted(per_payee.items()):
                    await conn.execute(credit, {"w": payee, "amt": amt})
        for fut, balance in answers:
            fut.set_result(balance)

    async def submit(owner: str, payee: str, item: tuple[Any, ...]) -> int | None:
        fut = asyncio.get_running_loop().create_future()
        queue = queues.get(owner)
        if queue is not None:  # a group of this payer is running: join the next one
            queue.append((item, payee, fut))
            return await fut  # type: ignore[no-any-return]
        queues[owner] = [(item, payee, fut)]
        try:
            while queues[owner]:
                group, queues[owner] = queues[owner], []
                try:
                    await run_group(owner, group)
                except BaseException as exc:
                    for _, _, waiting in group:
                        if not waiting.done():
                            waiting.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            for _, _, waiting in queues.pop(owner):
                waiting.set_exception(RuntimeError("the group's runner stopped"))
        return await fut  # type: ignore[no-any-return]

    return submit


async def node_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The node: drains the request, answers one constant invoice."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _NODE_ANSWER})


app = _create() if os.environ.get("FLOOR_LEVEL") else None
gc.collect()
gc.freeze()
gc.set_threshold(20_000, *gc.get_threshold()[1:])
