"""Schemathesis against /openapi.json: generated requests (authenticated as an admin, so they
reach the real logic) never produce a 5xx, and responses match their declared schemas."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.db import create_engine, session_factory
from satvault.ledger.platform import ensure_platform_accounts
from satvault.web.app import create_app


@pytest.fixture
def admin_headers(db_url) -> dict[str, str]:
    async def make() -> str:
        engine = create_engine(db_url, pool_size=1)
        async with session_factory(engine)() as s, s.begin():
            await ensure_platform_accounts(s, "BTC")
            admin = await acc.create_user(s, email="fuzz@example.com", is_admin=True)
            merchant = await acc.create_merchant(s, name="Fuzz shop")
            await acc.create_store(s, merchant_id=merchant.id, name="Fuzz store")
            _, token = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        await engine.dispose()
        return token

    return {"Authorization": f"Bearer {asyncio.run(make())}"}


def test_api_never_5xx_and_matches_schema(db_url, tmp_path, admin_headers):
    app = create_app(Settings(database_url=db_url, home=tmp_path, lightning_backend="none"),
                     start_workers=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {**admin_headers, "Idempotency-Key": "fuzz"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def run(case) -> None:
            case.call_and_validate(headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance])

        run()
