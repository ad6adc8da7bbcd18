"""Schemathesis against /openapi.json, the way its command line runs it (examples, coverage
and fuzzing phases), in-process over ASGI and authenticated as an admin so generated requests
reach the real logic. The app has a chain node and a Lightning node (the simulators) so no
answer is a "not configured" 503.

Checks, on every response:
* ``not_a_server_error``: no 5xx;
* ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
  ``response_headers_conformance``: the answer is one the document declares;
* ``negative_data_rejection``: a request the schema calls invalid is refused;
* ``positive_data_acceptance``: a request the schema calls valid is accepted, except that
  a few operations may refuse it for a rule of the domain that OpenAPI cannot state (listed in
  ``DOMAIN_REFUSALS`` with their problem types); ``refused_only_by_domain_rules`` then checks
  that such a refusal is one of those rules, never the request validation;
* ``unsupported_method``, ``allow_header_conformance``: other methods get 405 with ``Allow``.

Bounded and deterministic: a fixed seed, ``deterministic`` generation, few examples.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.python.asgi import shutdown_lifespans

from satvault.accounts import service as acc
from satvault.composition import (
    ensure_dev_signer,
    open_sessions,
    open_signer,
    register_signer_wallets,
)
from satvault.config import Settings
from satvault.db import create_engine
from satvault.ledger.platform import ensure_platform_accounts
from satvault.simnet.chain import Chain
from satvault.simnet.ln.lnd_rest import LndRestServer
from satvault.simnet.ln.network import LnNetwork
from satvault.simnet.rpc import SimnetServer
from satvault.web.app import create_app
from tests.conftest import PG_URL

# One database: what this test checks is the answers' conformance to the OpenAPI document,
# which no database changes; that no input makes a 5xx or a change is checked on both by
# tests/web/test_fuzz_inputs.py. PostgreSQL (production's) where it is configured.
pytestmark = [pytest.mark.slow,
              pytest.mark.parametrize("db_url", ["postgres" if PG_URL else "sqlite"],
                                      indirect=True)]

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance",
          "negative_data_rejection", "positive_data_acceptance", "unsupported_method",
          "allow_header_conformance"]

# Operation → the problem types with which it may refuse a request its schema calls valid:
# each is a rule about state or about several fields together, which a schema cannot say.
_REUSED = "idempotency-key-reused"  # the same key with another body: state, not shape
_DESTINATION = {"invalid-address", "invalid-payment-uri", "invalid-invoice", "wrong-network",
                "amount-required", "invoice-expired", "payment-refused", "lnurl-error",
                "insufficient-funds", "invalid-withdrawal", "kyc-limit-exceeded",
                "wallet-frozen", "risk-rejected", _REUSED}
DOMAIN_REFUSALS: dict[str, set[str]] = {
    # Nothing sealed yet: no head to anchor on chain.
    "POST /api/v1/admin/audit/anchors": {"invalid-input"},
    # KYC: tiers the configuration has, an approval naming documents and checks, a name that
    # is more than punctuation, a reviewer who is not the subject; a wallet frozen once.
    "POST /api/v1/admin/kyc/{owner_type}/{owner_id}/records": {"invalid-input", "forbidden"},
    "POST /api/v1/admin/kyc/screen": {"invalid-input"},
    # A period that ends before it starts, or is longer than a report covers.
    "GET /api/v1/admin/reports/ctr": {"invalid-input"},
    "GET /api/v1/admin/reports/compliance": {"invalid-input"},
    "POST /api/v1/admin/wallets/{wallet_id}/freeze": {"invalid-input"},
    "POST /api/v1/admin/wallets/{wallet_id}/unfreeze": {"invalid-input"},
    # An admin key must name the merchant, a merchant key must not: who asks decides.
    "POST /api/v1/stores": {"invalid-input", _REUSED},
    # A well-formed currency code that no configured rate source prices.
    "PATCH /api/v1/stores/{store_id}": {"invalid-input"},
    # Exactly one of invoice_id and wallet_id.
    "GET /api/v1/events/stream": {"invalid-stream"},
    # Cursors are opaque: only one the server handed out is valid.
    "GET /api/v1/stores/{store_id}/invoices": {"invalid-cursor"},
    "GET /api/v1/wallets/{wallet_id}/transactions": {"invalid-cursor"},
    "GET /api/v1/admin/review-items": {"invalid-cursor"},
    # A resolution note is more than blanks.
    "POST /api/v1/admin/review-items/{item_id}/resolve": {"invalid-input"},
    # A txid with paid_by and only with it, a note more than blanks; a refusal (not found)
    # is stored with its key: another body under it is reused.
    "POST /api/v1/admin/payout-batches/{batch_id}/resolve": {"invalid-input", _REUSED},
    # A txid with confirmed_by and only with it, a note more than blanks; a refusal (not
    # found) is stored with its key: another body under it is reused.
    "POST /api/v1/admin/custody-moves/{move_id}/resolve": {"invalid-input", _REUSED},
    # A cancel's refusal (not found) is stored with its key: another body under it is reused.
    "POST /api/v1/withdrawals/{withdrawal_id}/cancel": {_REUSED},
    # Amounts in a currency's decimals, currencies a rate source prices, the wallet's funds.
    "POST /api/v1/stores/{store_id}/invoices": {"invalid-input", "unsupported-currency", _REUSED},
    # What a destination string is (address, BIP21, BOLT11, LNURL) and what it asks.
    "POST /api/v1/wallets/{wallet_id}/withdrawals": _DESTINATION,
    "POST /api/v1/invoices/{invoice_id}/refunds": _DESTINATION | {"invalid-input"},
    "POST /api/v1/wallets/{wallet_id}/lnurl-withdraw": {"insufficient-funds", "invalid-input",
                                                        _REUSED},
    # A rule set's JSON: which fields exist, and whether a value suits its field and operator.
    "POST /api/v1/admin/risk/rule-sets": {"invalid-input"},
    # Whether that version is a draft, and by someone else.
    "POST /api/v1/admin/risk/rule-sets/{version}/approve": {"rule-set-refused", "not-found"},
    "POST /api/v1/admin/risk/rule-sets/{version}/reject": {"rule-set-refused", "not-found"},
    # Whether a webhook URL's host may be called (public, resolvable); known event names.
    "POST /api/v1/stores/{store_id}/webhooks": {"unsafe-url", "invalid-webhook"},
    "PATCH /api/v1/stores/{store_id}/webhooks/{webhook_id}": {"unsafe-url", "invalid-webhook"},
    # A case is assigned to an admin user; a note or narrative is more than blanks; an
    # attachment's URI names a scheme.
    "POST /api/v1/admin/risk/cases/{case_id}/assign": {"invalid-input"},
    "POST /api/v1/admin/risk/cases/{case_id}/notes": {"invalid-input"},
    "POST /api/v1/admin/risk/cases/{case_id}/attachments": {"invalid-input"},
    "PUT /api/v1/admin/risk/cases/{case_id}/sar/narrative": {"invalid-input"},
    "POST /api/v1/admin/risk/cases/{case_id}/sar/file": {"invalid-input"},
    # The withdrawal policy's rule language, and what an allow-list destination is.
    "POST /api/v1/admin/withdrawal-policy": {"invalid-policy"},
    "POST /api/v1/wallets/{wallet_id}/allowlist": {"invalid-policy"},
    # Sign-in: what an e-mail address is; whether a mailed token is ours and unspent; which
    # scopes exist.
    "POST /api/v1/auth/signup": {"invalid-input"},
    "POST /api/v1/auth/verify": {"invalid-input"},
    "POST /api/v1/auth/password-reset/confirm": {"invalid-input"},
    "POST /api/v1/auth/token": {"invalid-input"},
}


# Two rules a JSON Schema cannot state, applied to every operation at the edge: no NUL and no
# lone UTF-16 surrogate in any string or key (web/guard.py), and ...
EVERYWHERE = {"invalid-characters"}


def _only_integral_floats(body: bytes) -> bool:
    """... money and other counts are integer literals: JSON Schema's "integer" also admits
    ``1000.0``, which satvault refuses (strict integers: ``true`` once became 1 msat)."""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return False
    # pydantic's own strict integers, and the literal-valued ones (``SpeedPolicy``: 0, 1, 2
    # or 6) whose strictness is a validator of ours (found when schemathesis drew 2.0)
    return bool(errors) and all(e.get("msg") in ("Input should be a valid integer",
                                                 "Value error, must be a JSON integer")
                                for e in errors)


def _problem_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("type", "")).rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        return ""


@schemathesis.check
def refused_only_by_domain_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the schema calls valid is never refused by the request validation, and a
    4xx that is not about credentials, existence or conflicts is a listed domain rule."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    kind = _problem_type(response.content)
    allowed = DOMAIN_REFUSALS.get(case.operation.label, set()) | EVERYWHERE
    if kind == "invalid-request" and _only_integral_floats(response.content):
        return None
    if kind not in allowed:
        raise AssertionError(f"a schema-valid request was refused with {kind!r} "
                             f"({response.content[:300]!r}); allowed here: {sorted(allowed)}")
    return None


@pytest.fixture
def world(db_url: str, tmp_path: Path):
    """Settings for an app with simulated nodes, the signer's wallets registered, an admin key."""
    chain_server = SimnetServer(Chain(), port=0, user="u", password="p").start()
    lnd = LndRestServer(LnNetwork(), node="platform").start()
    settings = Settings(database_url=db_url, home=tmp_path, network="regtest",
                        chain_backend="bitcoind", bitcoind_url=chain_server.url,
                        lightning_backend="lnd", lnd_url=lnd.url,
                        # The token endpoint's generated credentials all fail: they must not
                        # use up the address's failure budget for the rest of the run.
                        rate_limit_auth_failures_per_address="10000/minute")
    ensure_dev_signer(settings)

    async def setup() -> str:
        engine = create_engine(db_url, pool_size=1)
        async with open_sessions(engine)() as s, s.begin():
            await ensure_platform_accounts(s, "BTC")
            await register_signer_wallets(s, open_signer(settings), settings)
            admin = await acc.create_user(s, email="fuzz@example.com", is_admin=True)
            merchant = await acc.create_merchant(s, name="Fuzz shop")
            await acc.create_store(s, merchant_id=merchant.id, name="Fuzz store")
            _, token = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        await engine.dispose()
        return token

    token = asyncio.run(setup())
    try:
        yield settings, token
    finally:
        lnd.stop()
        chain_server.stop()


def test_api_answers_what_its_openapi_document_says(world):
    settings, token = world
    # api_only: the lifespan builds the node clients in the loop that serves the requests.
    app = create_app(settings, start_workers=False, api_only=True)
    config = SchemathesisConfig.from_dict({
        "seed": 20261204,
        # a hung request still fails; a slow one on a busy machine (two suite workers, a
        # request waiting for a core) is not a finding about the schema (the default is 10 s)
        "request-timeout": 60,
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": 5, "deterministic": True, "mode": "all"},
        "phases": {"stateful": {"enabled": False},
                   "coverage": {"unexpected-methods": ["GET", "PUT", "POST", "DELETE", "PATCH",
                                                       "TRACE"]}},
        "checks": {"enabled": False,
                   **{name: {"enabled": True}
                      for name in [*CHECKS, refused_only_by_domain_rules.__name__]},
                   "positive_data_acceptance": {"expected-statuses": [
                       "2xx", "401", "403", "404", "409", "422"]}},
        "continue-on-failure": True,
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    keys = itertools.count()

    @schema.hook
    def map_headers(context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
        # A fresh Idempotency-Key per request (a reused one rightly gets 422), unless the
        # generated one is the invalid part of a negative case.
        key = (headers or {}).get("Idempotency-Key")
        if headers is not None and isinstance(key, str) and 0 < len(key) <= 200:
            headers["Idempotency-Key"] = f"fuzz-{next(keys)}"
        return headers

    failures: list[str] = []
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                for case_id, nodes in event.recorder.checks.items():
                    for node in nodes:
                        if node.failure_info is None:
                            continue
                        failure = node.failure_info.failure
                        interaction = event.recorder.interactions.get(case_id)
                        answer = "" if interaction is None or interaction.response is None \
                            else (f" -> {interaction.response.status_code} "
                                  f"{interaction.response.content[:200]!r}")
                        failures.append(f"{failure.title}: {event.recorder.label}: "
                                        f"{failure.message[:300]}{answer}\n    "
                                        f"{node.failure_info.code_sample[-300:]}")
            elif isinstance(event, events.NonFatalError | events.FatalError):
                failures.append(f"error: {event!r}")
    finally:
        shutdown_lifespans()
    unique = sorted(set(failures))
    assert not unique, f"{len(unique)} failures:\n" + "\n".join(unique[:400])
