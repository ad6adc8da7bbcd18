"""The OpenAPI document is true to what the app answers: errors are problem+json with one
shared schema, a 405 names every allowed method, and the docs' assets are served locally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.web.app import create_app


@asynccontextmanager
async def client_for(engine, db_url) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=db_url, lightning_backend="none"), engine=engine,
                     start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def admin(sessions) -> dict[str, str]:
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, key = await acc.create_api_key(s, owner_id=user.id, scopes=["admin"])
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("TRACE", "/api/v1/me", "GET"),
    ("TRACE", "/healthz", "GET"),
    ("PUT", "/api/v1/stores", "GET, POST"),  # two routes on one path: both methods
    ("BREW", "/api/v1/stores/sto_x", "GET, PATCH"),
    ("POST", "/api/v1/invoices/inv_x", "GET"),
    ("TRACE", "/lnurl-auth/challenge", "GET"),
])
async def test_405_names_every_allowed_method(engine, db_url, admin, method, path, allowed):
    async with client_for(engine, db_url) as c:
        r = await c.request(method, path, headers=admin)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 405


async def test_every_error_answer_is_documented_as_a_problem(engine, db_url):
    async with client_for(engine, db_url) as c:
        doc = (await c.get("/openapi.json")).json()
    problem = {"$ref": "#/components/schemas/Problem"}
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {
        "type", "title", "status", "detail"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            errors = {s: r for s, r in op["responses"].items() if s >= "400"}
            assert "429" in errors, where
            if path == "/healthz":
                continue  # its 503 is the health report itself
            for status, response in errors.items():
                assert response["content"] == {"application/problem+json": {"schema": problem}
                                               }, (where, status)
            headers = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"}
            if "x-api-key" in headers:
                assert {"401", "403"} <= errors.keys(), where
            if "{" in path:
                assert "404" in errors, where
            if "requestBody" in op:
                assert {"400", "413", "422"} <= errors.keys(), where
            if "idempotency-key" in headers:
                assert "409" in errors, where
    # Conflicts of state a route declares itself.
    paths = doc["paths"]
    assert "409" in paths["/api/v1/wallets/{wallet_id}/lightning-address"]["post"]["responses"]
    assert "409" in paths["/api/v1/lnurl-withdraw/{voucher_id}"]["delete"]["responses"]
    assert {"403", "409", "410"} <= paths["/lnurl-auth/{k1}/session"]["post"]["responses"].keys()
    assert "503" in paths["/api/v1/wallets/{wallet_id}/deposits"]["post"]["responses"]


async def test_docs_pages_load_their_assets_from_this_server(engine, db_url):
    async with client_for(engine, db_url) as c:
        for page in ("/docs", "/redoc"):
            r = await c.get(page)
            assert r.status_code == 200
            assert "cdn." not in r.text and "fonts.googleapis" not in r.text
            assert "default-src 'self'" in r.headers["content-security-policy"]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            r = await c.get(f"/docs-assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 100_000, asset


async def test_what_the_schema_calls_invalid_is_refused_and_valid_is_accepted(
        engine, db_url, sessions, admin):
    async with sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Store")
    async with client_for(engine, db_url) as c:
        doc = (await c.get("/openapi.json")).json()
        listing = f"/api/v1/stores/{store.id}/invoices"
        # A date-time is RFC 3339 text, not a number of seconds.
        for bad in ("0", "0.5", "1700000000"):
            r = await c.get(listing, params={"created_from": bad}, headers=admin)
            assert r.status_code == 422 and r.json()["type"].endswith("invalid-request"), bad
        r = await c.get(listing, params={"created_from": "2026-01-01T00:00:00Z"}, headers=admin)
        assert r.status_code == 200
        r = await c.get(listing, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=admin)
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-cursor")
        # Settings cannot be set to null, and the schema says so.
        patch = doc["components"]["schemas"]["StorePatch"]["properties"]
        assert all("anyOf" not in p and p.get("type") != "null" for p in patch.values())
        r = await c.patch(f"/api/v1/stores/{store.id}", json={"name": None}, headers=admin)
        assert r.status_code == 422
        # The idempotent POSTs that need a key say so.
        create = doc["paths"]["/api/v1/stores/{store_id}/invoices"]["post"]
        key = next(p for p in create["parameters"] if p["name"] == "idempotency-key")
        assert key["required"] is True and key["schema"]["maxLength"] == 200
        r = await c.post(listing, json={"amount": "1", "currency": "SATS"}, headers=admin)
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == ["header", "idempotency-key"]


async def test_every_request_body_refuses_fields_it_does_not_know(engine, db_url):
    """Found from outside: a create body took unknown fields and ignored them, so a typo
    (``expiration_minute``, ``redirect_ur``) made an invoice with the default instead of an
    error. Every JSON body the API takes is documented, and validated, as closed."""
    async with client_for(engine, db_url) as c:
        doc = (await c.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    open_bodies = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            # An optional body is anyOf the model and null.
            refs = [b["$ref"] for b in [body["schema"], *body["schema"].get("anyOf", [])]
                    if "$ref" in b]
            assert len(refs) == 1, (method, path, body)
            name = refs[0].rsplit("/", 1)[-1]
            if schemas[name].get("additionalProperties") is not False:
                open_bodies.append(f"{method.upper()} {path} ({name})")
    # The token endpoint follows OAuth 2.0 (RFC 6749, 3.2 and 3.1: a server MUST ignore
    # request parameters it does not recognise), so a standard client's extras pass.
    assert open_bodies == ["POST /api/v1/auth/token (TokenRequest)"]


async def test_a_post_body_with_nothing_required_may_be_left_out(engine, db_url):
    """Found from outside: ``POST …/investigate`` answered 422 without a body (``{}`` was
    needed), as did a deposit request and an approver's rejection, every field of their
    bodies optional. A POST whose body asks for nothing takes none (PATCH keeps its body:
    an empty change is a mistake the caller is told of)."""
    async with client_for(engine, db_url) as c:
        doc = (await c.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    needless = []
    for path, operations in doc["paths"].items():
        op = operations.get("post", {})
        body = op.get("requestBody", {})
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        if body.get("required") and "$ref" in schema \
                and not schemas[schema["$ref"].rsplit("/", 1)[-1]].get("required"):
            needless.append(path)
    assert needless == []
