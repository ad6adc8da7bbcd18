"""Every status column has one spelling: a StrEnum in its domain's models, and the live
schema's CHECK constraint allows exactly that enum's values (checked on the migrated database,
not on the models, so a migration and an enum cannot drift apart unnoticed)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from enum import Enum, StrEnum

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from satvault.accounts.models import User, UserStatus
from satvault.audit.models import AnchorStatus
from satvault.auth.models import Purpose
from satvault.db import Base, StrEnumType, utcnow
from satvault.events.models import DeliveryStatus
from satvault.idempotency_models import IdempotencyKey, IdempotencyStatus
from satvault.invoices import models as invoice_models
from satvault.invoices.status import Additional, Status
from satvault.kyc.models import KycDecision, KycRequestStatus, ScreeningList
from satvault.lightning.lnurl_models import ChallengeStatus, VoucherStatus
from satvault.lightning.models import LnInvoiceStatus, LnPaymentStatus
from satvault.onchain.models import AddressStatus, CreditState, DepositStatus, OnchainPaymentStatus
from satvault.payouts.models import (
    BatchStatus,
    MoveKind,
    PayoutBatch,
    WithdrawalMethod,
    WithdrawalStatus,
)
from satvault.risk.models import (
    CaseEventKind,
    CaseStatus,
    FrozenStatus,
    Money,
    Resolution,
    RuleSetStatus,
    SarStatus,
)
from satvault.risk.rules import Outcome
from satvault.withdrawals.policy.models import (
    ApprovalStatus,
    ChangeAction,
    ChangeStatus,
    PolicyStatus,
)

# (table, column, CHECK constraint of the migrations, the enum its values must equal)
CHECKED: list[tuple[str, str, str, type[StrEnum]]] = [
    ("onchain_addresses", "status", "ck_onchain_addresses_status", AddressStatus),
    ("onchain_payments", "status", "ck_onchain_payments_status", OnchainPaymentStatus),
    ("onchain_payments", "credit_state", "ck_onchain_payments_credit_state", CreditState),
    ("ln_invoices", "status", "ck_ln_invoices_status", LnInvoiceStatus),
    ("ln_payments", "status", "ck_ln_payments_status", LnPaymentStatus),
    ("lnurl_withdraw_vouchers", "status", "ck_lnurl_withdraw_vouchers_status", VoucherStatus),
    ("lnurl_auth_challenges", "status", "ck_lnurl_auth_challenges_status", ChallengeStatus),
    ("withdrawals", "status", "ck_withdrawals_status", WithdrawalStatus),
    ("withdrawals", "method", "ck_withdrawals_method", WithdrawalMethod),
    ("withdrawal_policies", "status", "ck_withdrawal_policies_status", PolicyStatus),
    ("withdrawal_approval_requests", "status", "ck_withdrawal_approval_requests_status",
     ApprovalStatus),
    ("payout_batches", "status", "ck_payout_batches_status", BatchStatus),
    ("payout_batches", "kind", "ck_payout_batches_kind", MoveKind),
    ("webhook_deliveries", "status", "ck_webhook_deliveries_status", DeliveryStatus),
    ("idempotency_keys", "status", "ck_idempotency_status", IdempotencyStatus),
    ("store_invoices", "status", "ck_store_invoices_status", Status),
    ("store_invoices", "additional_status", "ck_store_invoices_additional", Additional),
    ("kyc_records", "decision", "ck_kyc_records_decision", KycDecision),
    ("screening_entries", "list", "ck_screening_entries_list", ScreeningList),
    ("risk_rule_sets", "status", "ck_risk_rule_sets_status", RuleSetStatus),
    ("risk_cases", "status", "ck_risk_cases_status", CaseStatus),
    ("risk_decisions", "outcome", "ck_risk_decisions_outcome", Outcome),
    ("audit_anchors", "status", "ck_audit_anchors_status", AnchorStatus),
    ("risk_cases", "resolution", "ck_risk_cases_resolution", Resolution),
    ("risk_cases", "money", "ck_risk_cases_money", Money),
    ("risk_case_events", "kind", "ck_risk_case_events_kind", CaseEventKind),
    ("risk_sars", "status", "ck_risk_sars_status", SarStatus),
    ("risk_frozen_deposits", "status", "ck_risk_frozen_deposits_status", FrozenStatus),
    ("auth_email_tokens", "purpose", "ck_auth_email_tokens_purpose", Purpose),
    ("kyc_requests", "status", "ck_kyc_requests_status", KycRequestStatus),
    ("approver_group_changes", "status", "ck_approver_group_changes_status", ChangeStatus),
    ("approver_group_changes", "action", "ck_approver_group_changes_action", ChangeAction),
]
# Typed by an enum, but without a CHECK constraint: the enum is the only gate.
UNCHECKED: list[tuple[str, str, type[StrEnum]]] = [
    ("deposit_requests", "status", DepositStatus),
    ("users", "status", UserStatus),
]


def _matching_paren(sql: str, start: int) -> int:
    depth = 0
    for i in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced parentheses in {sql!r}")


async def _check_expression(conn: AsyncConnection, table: str, name: str) -> str:
    """The boolean expression of the CHECK constraint ``name``, as the database stores it."""
    if conn.dialect.name == "postgresql":
        definition = (await conn.execute(text(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid WHERE c.conname = :n AND t.relname = :t"),
            {"n": name, "t": table})).scalar_one()
        assert definition.startswith("CHECK "), definition
        return str(definition)[len("CHECK "):]
    ddl = (await conn.execute(text(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    )).scalar_one()
    found = re.search(rf'CONSTRAINT "?{name}"? CHECK \(', ddl)
    assert found is not None, f"{name} is not in the schema of {table}"
    opening = found.end() - 1
    return str(ddl[opening:_matching_paren(ddl, opening) + 1])


async def _allows(conn: AsyncConnection, expression: str, column: str, value: str) -> bool:
    """What the database itself answers for the constraint, for a row whose column is
    ``value`` (the constraint names no other column)."""
    return bool((await conn.execute(text(
        f"SELECT CASE WHEN {expression} THEN 1 ELSE 0 END "
        f"FROM (SELECT CAST(:v AS VARCHAR(40)) AS {column}) AS probe"), {"v": value}
    )).scalar_one())


async def test_every_check_constraint_allows_exactly_its_enum(engine: AsyncEngine):
    async with engine.connect() as conn:
        for table, column, name, enum_cls in CHECKED:
            expression = await _check_expression(conn, table, name)
            # the literals the constraint spells out are exactly the enum's values
            assert set(re.findall(r"'([^']*)'", expression)) == {m.value for m in enum_cls}, \
                (table, column, expression)
            for member in enum_cls:
                assert await _allows(conn, expression, column, member.value), (name, member)
            # nothing else, not even a member's name (the values are case-sensitive)
            for outsider in ("bogus", "", next(iter(enum_cls)).name):
                assert not await _allows(conn, expression, column, outsider), (name, outsider)


def test_every_enum_typed_column_is_covered_here():
    """A status column added later must be added above (and get its CHECK)."""
    assert invoice_models.StoreInvoice.__table__ is Base.metadata.tables["store_invoices"]
    typed = {(t.name, c.name, c.type.enum_cls) for t in Base.metadata.tables.values()
             for c in t.columns if isinstance(c.type, StrEnumType)}
    listed = {(t, c, e) for t, c, _, e in CHECKED} | set(UNCHECKED)
    assert typed == listed


def _batch_row(batch_id: str, status: str) -> dict[str, object]:
    now = utcnow()
    return {"id": batch_id, "status": status, "psbt": "cHNidP8=", "feerate_sat_vb": 1,
            "fee_sat": 0, "broadcast_attempts": 0, "created_at": now, "updated_at": now}


async def test_the_database_itself_refuses_a_status_outside_the_set(engine: AsyncEngine):
    """Written as text, past the enum type: every member goes in, anything else is refused
    by the CHECK constraint."""
    insert_batch = text(
        "INSERT INTO payout_batches (id, status, psbt, feerate_sat_vb, fee_sat, "
        "broadcast_attempts, created_at, updated_at) "
        "VALUES (:id, :status, 'cHNidP8=', 1, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    insert_key = text(
        'INSERT INTO idempotency_keys (owner, "key", request_hash, status, created_at, '
        "expires_at) VALUES ('test', :key, 'h', :status, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    async with engine.begin() as conn:
        for member in BatchStatus:
            await conn.execute(insert_batch, {"id": f"pob_{member}", "status": member.value})
        for member in IdempotencyStatus:
            await conn.execute(insert_key, {"key": f"k_{member}", "status": member.value})
    for statement, params in ((insert_batch, {"id": "pob_x", "status": "sent"}),
                              (insert_key, {"key": "k_x", "status": "failed"})):
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(statement, params)


async def test_rows_load_as_enum_members_and_unknown_strings_never_reach_the_database(
        engine: AsyncEngine):
    async with engine.begin() as conn:
        await conn.execute(insert(PayoutBatch), [_batch_row("pob_a", BatchStatus.SIGNING),
                                                 _batch_row("pob_b", "stuck")])  # a string binds
        await conn.execute(insert(IdempotencyKey).values(
            owner="test", key="k", request_hash="h", status=IdempotencyStatus.RUNNING,
            created_at=utcnow(), expires_at=utcnow() + timedelta(hours=1)))
    async with engine.connect() as conn:
        loaded = dict((await conn.execute(select(PayoutBatch.id, PayoutBatch.status))).all())
        key_status = (await conn.execute(select(IdempotencyKey.status))).scalar_one()
        # a filter spelled as a string is the same filter
        stuck = (await conn.execute(select(PayoutBatch.id).where(
            PayoutBatch.status == "stuck"))).scalars().all()
    assert loaded == {"pob_a": BatchStatus.SIGNING, "pob_b": BatchStatus.STUCK}
    assert all(type(s) is BatchStatus for s in loaded.values())
    assert type(key_status) is IdempotencyStatus and key_status is IdempotencyStatus.RUNNING
    assert stuck == ["pob_b"]

    # "sent" is no batch status, "disabled" no user status (users has no CHECK constraint):
    # refused while binding, in Python, before any statement is sent
    for statement in (insert(PayoutBatch).values(**_batch_row("pob_c", "sent")),
                      insert(User).values(id="usr_x", email="x@example.com", display_name="",
                                          is_admin=False, kyc_tier=0, status="disabled",
                                          created_at=utcnow()),
                      select(PayoutBatch.id).where(PayoutBatch.status == "Stuck")):
        with pytest.raises(StatementError) as caught:
            async with engine.begin() as conn:
                await conn.execute(statement)
        assert isinstance(caught.value.orig, ValueError)
        assert not isinstance(caught.value, IntegrityError)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM payout_batches"))).scalar_one() == 2
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


def test_statuses_serialise_as_their_strings():
    """JSON payloads and API answers keep the plain strings."""
    assert json.dumps({"status": WithdrawalStatus.BROADCAST}) == '{"status": "broadcast"}'
    assert f"{LnPaymentStatus.IN_FLIGHT}" == "in_flight" and isinstance(Status.NEW, Enum)
