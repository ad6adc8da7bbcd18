"""Property test over the whole HTTP surface: every operation of the app (those in its OpenAPI
document and the hidden LNURL/checkout routes), every path and query parameter and every body
field, fed NUL bytes, lone surrogates, huge and tiny numbers, non-ASCII digits, over-long
strings, wrong JSON types, beside otherwise valid values (real store, wallet, invoice, webhook
ids, so bad values reach the real logic), through the real app over ASGI, authenticated as an
admin, with a chain simulator and a Lightning simulator behind it.

Asserted for every request: no 5xx; and for every 4xx, no row changed in any table (counted
before and after). The one table left out is ``idempotency_keys``: a refused request that
carried an Idempotency-Key records the refusal so a retry gets the same answer (by design).

Hypothesis drives the values. The example budget per operation is
``SATVAULT_FUZZ_EXAMPLES`` (default 25, about 10 s per backend; 200 took 90 s), and the
examples are the same on every run unless ``SATVAULT_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satvault.accounts import service as acc
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit
from satvault.lightning.lnurl import decode_lnurl
from satvault.web.app import create_app
from tests.chainenv import LnEnv
from tests.web.rows import row_counts

pytestmark = pytest.mark.slow  # run first: see tests/conftest.py

EXAMPLES = int(os.environ.get("SATVAULT_FUZZ_EXAMPLES", "25"))
# The same examples on every run (a test must not be flaky); SATVAULT_FUZZ_RANDOM=1 explores.
DERANDOMIZE = not os.environ.get("SATVAULT_FUZZ_RANDOM")
# Not a request's change: the idempotency records, and the rates the platform accepted on a
# cache miss (recorded by whichever request asked first, whatever its own outcome).
SKIP_TABLES = ("idempotency_keys", "accepted_rates")
# A refused sign-in is recorded on purpose (the audit log, the account's failure count behind
# the lockout): the one change a 401/429 of these operations may make, in these tables only.
REFUSALS_RECORDED = {"POST /api/v1/auth/token": {"audit_events", "auth_credentials"}}
PROBLEM = "application/problem+json"

# ---------------------------------------------------------------------------- the values

_BAD_TEXT = [
    "\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d", "\udc00\ud800",  # NUL, lone surrogates
    "١٢٣", "\uff11\uff12", "१२", "1_000", " 12 ", "1E+999999", "1e-3", ".001", "-0",
    "NaN", "Infinity", "9" * 60, "", " ", "%00", "../../etc", "\u202e", "\U0001f600" * 300,
    "é" * 700, "x" * 5000, "\\u0000", "null", "true", "[]", "{}",
]
_BAD_NUMBERS: list[Any] = [
    0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400, 1e308, -1e308,
    1e-300, 5e-324, 0.5, 1000.0, float("nan"), float("inf"), True, False, None, "1000",
    "1E+999999",
]
bad_text = st.one_of(st.sampled_from(_BAD_TEXT),
                     st.text(max_size=40),
                     st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Nd"]),
                             min_size=1, max_size=8),
                     st.integers(200, 3000).map(lambda n: "z" * n))
bad_number = st.one_of(st.sampled_from(_BAD_NUMBERS), st.integers(),
                       st.floats(allow_nan=True, allow_infinity=True))
wrong_json = st.sampled_from([[], {}, [1, "\x00"], {"\ud800": 1}, {"a": {"b": ["\x00"]}}])


def bad_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kinds = _kinds(schema)
    if kinds & {"integer", "number"}:
        return st.one_of(bad_number, bad_text, wrong_json)
    return st.one_of(bad_text, bad_text, bad_number, wrong_json)


def _kinds(schema: dict[str, Any]) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for alt in schema.get("anyOf", []) + schema.get("allOf", []):
        found |= _kinds(alt)
    if "enum" in schema:
        found |= {type(v).__name__.replace("int", "integer").replace("str", "string")
                  for v in schema["enum"]}
    return found


# ---------------------------------------------------------------------- the operations

@dataclass
class Slot:
    where: str  # path | query | body
    name: str
    schema: dict[str, Any]
    required: bool


@dataclass
class Operation:
    method: str
    path: str
    slots: list[Slot] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.165 keeps them as
    ``_IncludedRouter`` entries around the original router; our routers carry their prefix)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found += _api_routes(inner.routes)
    return found


def operations(app: Any) -> list[Operation]:
    doc = app.openapi()
    ops: list[Operation] = []
    for path, items in doc["paths"].items():
        for method, op in items.items():
            o = Operation(method.upper(), path)
            for p in op.get("parameters", []):
                if p["in"] in ("path", "query"):
                    o.slots.append(Slot(p["in"], p["name"], p.get("schema", {}),
                                        bool(p.get("required"))))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                schema = _resolve(doc, body["schema"])
                for name, prop in schema.get("properties", {}).items():
                    o.slots.append(Slot("body", name, _resolve(doc, prop),
                                        name in schema.get("required", [])))
            ops.append(o)
    # The routes left out of the document (LNURL, Lightning Address, checkout, QR images) are
    # just as public: walk them from the router.
    for route in _api_routes(app.routes):
        if route.include_in_schema:
            continue
        for method in sorted(route.methods):
            o = Operation(method, route.path)
            o.slots += [Slot("path", p.name, {"type": "string"}, True)
                        for p in route.dependant.path_params]
            o.slots += [Slot("query", p.name, {"type": "string"}, False)
                        for p in route.dependant.query_params]
            ops.append(o)
    # Deleting comes last, so the objects the other operations use are still there.
    return sorted(ops, key=lambda o: o.method == "DELETE")


# ------------------------------------------------------------------------- the test

@pytest.fixture
async def world(lnenv: LnEnv) -> dict[str, Any]:
    """Real objects for the path parameters, made through the API where it matters."""
    async with lnenv.sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        admin = await acc.create_user(s, email="fuzz@example.com", is_admin=True)
        merchant = await acc.create_merchant(s, name="Fuzz shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Fuzz store")
        _, token = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        # The admin's own wallet: an admin's key moves no customer's money.
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=admin.id)
    await submit(lnenv.sessions, [TransferSpec("fuzz-funds", platform.external.id,
                                               wallet.ledger_account_id, 10**11, "BTC")])
    return {"token": token, "store_id": store.id, "merchant_id": merchant.id,
            "wallet_id": wallet.id, "account_id": wallet.ledger_account_id}


async def _objects(c: httpx.AsyncClient, world: dict[str, Any]) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {world['token']}"}
    inv = await c.post(f"/api/v1/stores/{world['store_id']}/invoices", json={
        "amount": "1000", "currency": "SATS"}, headers={**auth, "Idempotency-Key": "fuzz-inv"})
    assert inv.status_code == 201, inv.text
    hook = await c.post(f"/api/v1/stores/{world['store_id']}/webhooks", headers=auth, json={
        "url": "http://127.0.0.1:9/hook", "events": ["invoice.settled"]})
    assert hook.status_code == 201, hook.text
    dep = await c.post(f"/api/v1/wallets/{world['wallet_id']}/deposits", headers=auth, json={
        "method": "lightning", "amount_msat": 5000, "description": "fuzz"})
    assert dep.status_code == 201, dep.text
    voucher = await c.post(f"/api/v1/wallets/{world['wallet_id']}/lnurl-withdraw",
                           headers=auth, json={"amount_msat": 5000})
    assert voucher.status_code == 201, voucher.text
    return {**world, "invoice_id": inv.json()["id"], "webhook_id": hook.json()["id"],
            "deposit_id": dep.json()["id"], "voucher_id": voucher.json()["id"],
            "link_token": urlsplit(decode_lnurl(voucher.json()["lnurl"])).path.split("/")[-1],
            "withdrawal_id": "wd_none", "delivery_id": "whd_none", "k1": "00" * 32,
            "username": "nobody", "kind": "lightning", "fmt": "svg", "name": "checkout.css"}


# Plain, valid values for the slots that are not being fuzzed in an example.
BODY_DEFAULTS: dict[str, Any] = {
    "name": "Fuzzed", "amount": "1000", "currency": "SATS", "destination":
    "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "url": "http://127.0.0.1:9/hook",
    "events": ["invoice.settled"], "status": "invalid", "username": "fuzzer",
    "session_token": "x", "amount_msat": 5000, "method": "onchain",
}


def _plain(slot: Slot, ids: dict[str, Any]) -> Any:
    if slot.where == "path":
        return ids.get(slot.name, "x_none")
    if slot.where == "body" and slot.name in ids:
        return ids[slot.name]
    if slot.where == "body" and slot.name in BODY_DEFAULTS:
        return BODY_DEFAULTS[slot.name]
    schema = slot.schema
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kinds = _kinds(schema)
    if "integer" in kinds:
        return max(1, int(schema.get("minimum", 1)))
    if "array" in kinds:
        return []
    if "object" in kinds:
        return {}
    return "x"


def request_strategy(op: Operation, ids: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """One request. Half the time exactly one slot is bad and the rest are plain (so the bad
    value travels as deep as it can); otherwise every slot is plain, bad or (if optional)
    left out."""
    plain = {(s.where, s.name): ("plain", _plain(s, ids)) for s in op.slots}
    if not op.slots:
        return st.just({})

    def one_bad(slot: Slot) -> st.SearchStrategy[dict[str, Any]]:
        return bad_value(slot.schema).map(
            lambda v: {**plain, (slot.where, slot.name): ("bad", v)})

    single = st.sampled_from(op.slots).flatmap(one_bad)
    choices = {}
    for slot in op.slots:
        options = [st.just(plain[(slot.where, slot.name)]),
                   bad_value(slot.schema).map(lambda v: ("bad", v))]
        if not slot.required and slot.where != "path":
            options.append(st.just(("omit", None)))
        choices[(slot.where, slot.name)] = st.one_of(*options)
    return st.one_of(single, st.fixed_dictionaries(choices))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _quote(value: Any) -> str:
    return quote(_text(value).encode("utf-8", "surrogatepass"), safe="")


def build(op: Operation, drawn: dict[tuple[str, str], tuple[str, Any]]) -> tuple[str, str,
                                                                                 bytes | None]:
    path = op.path
    query: list[str] = []
    body: dict[str, Any] = {}
    has_body = any(s.where == "body" for s in op.slots)
    for (where, name), (how, value) in drawn.items():
        if how == "omit" or (how == "plain" and value is None and where != "body"):
            continue  # (a plain None query parameter is one left out: the event stream never
            # gets a real id, since a valid stream would never end)
        if where == "path":
            path = path.replace("{" + name + "}", _quote(value) or "%20")
        elif where == "query":
            query.append(f"{quote(name)}={_quote(value)}")
        else:
            body[name] = value
    url = path + ("?" + "&".join(query) if query else "")
    content = json.dumps(body).encode() if has_body else None  # \ud800 goes as an escape
    return op.method, url, content


async def test_no_input_makes_a_5xx_or_a_change(lnenv: LnEnv, world: dict[str, Any]) -> None:
    """Hypothesis runs in a worker thread and calls a plain function, which hands each request
    to this test's event loop (where the app, its engine and the simulators' clients live)."""
    loop = asyncio.get_running_loop()
    app = create_app(lnenv.settings, engine=lnenv.sessions.kw["bind"], start_workers=False,
                     runtime=lnenv.runtime)
    auth = {"Authorization": f"Bearer {world['token']}"}
    seen: dict[str, int] = {}
    ops = operations(app)
    assert len(ops) > 40, [o.label for o in ops]

    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ids = await _objects(client, world)

        # The row counts after a refusal that changed nothing are the next request's before
        # (requests go one at a time, and no worker runs): one count per refusal, not two.
        counted: list[dict[str, int]] = []

        async def send(op: Operation, drawn: dict[tuple[str, str], tuple[str, Any]]) -> None:
            method, url, content = build(op, drawn)
            headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
            if content is not None:
                headers["Content-Type"] = "application/json"
            before = counted.pop() if counted else await row_counts(lnenv.sessions,
                                                                    skip=SKIP_TABLES)
            r = await asyncio.wait_for(client.request(method, url, content=content,
                                                      headers=headers), 20)
            seen[f"{r.status_code // 100}xx"] = seen.get(f"{r.status_code // 100}xx", 0) + 1
            assert r.status_code < 500, (op.label, url, content, r.status_code, r.text)
            if 400 <= r.status_code < 500:
                # API errors are problem+json; LNURL wallets and browsers get their own forms.
                assert r.headers["content-type"].startswith(PROBLEM) or \
                    not op.path.startswith("/api/"), (url, r.headers)
                after = await row_counts(lnenv.sessions, skip=SKIP_TABLES)
                changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
                if r.status_code in (401, 429):
                    for table in REFUSALS_RECORDED.get(op.label, ()):
                        changed.pop(table, None)
                assert not changed, (op.label, url, content, r.status_code, r.text, changed)
                if r.status_code not in (401, 429):
                    counted.append(after)

        def check_operation(op: Operation) -> None:
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
            @given(drawn=request_strategy(op, ids))
            def check(drawn: dict[tuple[str, str], tuple[str, Any]]) -> None:
                asyncio.run_coroutine_threadsafe(send(op, drawn), loop).result()

            check()

        def run_all() -> None:
            for op in ops:
                check_operation(op)

        await asyncio.to_thread(run_all)
    assert seen.get("4xx", 0) > len(ops), seen  # the bad values did reach the validation
