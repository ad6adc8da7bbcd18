"""a take of our invoice is over with its payment: marked done when the invoice leaves ``open``

Migration 0082 kept each take two minutes and counted as in flight those whose invoice was
still ``open``: every take read all the person's takes of the last two minutes to find the
few in flight. A busy payer's take then read its last two minutes of payments (at 50
payments a second, 6,000 rows each), and the database's CPU per internal payment doubled
over a minute of payments (``benchmarks/api.py``, docs/benchmarks.md). A trigger on
``ln_invoices`` now marks the take ``done`` when its invoice's status leaves ``open`` (paid,
cancelled, reserved for review, expired), in the unit of work that decides the payment, with
no statement of its own, and the takes in flight are read through a partial index of those
not done: what a take reads is the takes in flight (and those a process that stopped left
behind, which lapse after two minutes, as before).

A done take keeps its Idempotency-Key for two minutes: a payment with the same key for
another invoice is refused before that invoice leaves the node, in flight or just done
(found in CI: the first payment done between a second one's read of the key, still unused,
and its take, the second took another invoice off the node before the key's answer refused
it). Through an index on the key's digest.

Revision ID: 0083_takes_end_with_payments
Revises: 0082_ln_takes
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0083_takes_end_with_payments"
down_revision: str | None = "0082_ln_takes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ln_take as 0082 wrote it, but for the takes in flight (not done) and the key's check.
_TAKE = """
CREATE OR REPLACE FUNCTION ln_take(p_hash varchar, p_wallet varchar, p_amount numeric,
                        p_request varchar,
                        p_now timestamptz, p_live_since timestamptz,
                        p_refusals_since timestamptz, p_budget integer, p_cap integer,
                        p_check_balance boolean)
RETURNS text
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_person text;
    v_refusals integer;
    v_live integer;
    v_held numeric;
    v_free numeric;
    v_done integer;
BEGIN
    SELECT CASE WHEN w.owner_type = 'merchant'
                THEN coalesce((SELECT m.owner_user_id FROM merchants m WHERE m.id = w.owner_id),
                              w.owner_id)
                ELSE w.owner_id END
      INTO v_person FROM wallets w WHERE w.id = p_wallet;
    IF v_person IS NULL THEN
        RETURN 'no-wallet';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('ln_take:' || v_person, 0));
    IF NOT EXISTS (SELECT 1 FROM ln_invoices i
                    WHERE i.payment_hash = p_hash AND i.status = 'open') THEN
        RETURN 'not-open';
    END IF;
    -- A twin (the same caller's key, the same invoice) rides on the take in flight: both
    -- ask the node to cancel (harmless twice), and the key's row decides between them.
    IF p_request <> '' AND EXISTS (SELECT 1 FROM ln_takes t
                                    WHERE t.payment_hash = p_hash AND t.request = p_request
                                      AND t.at >= p_live_since) THEN
        RETURN 'taken';
    END IF;
    SELECT count(*) INTO v_refusals FROM internal_refusals r
     WHERE r.person = v_person AND r.at >= p_refusals_since;
    IF v_refusals >= p_budget THEN
        RETURN 'too-often:' || v_refusals;
    END IF;
    SELECT count(*), coalesce(sum(t.amount_msat) FILTER (WHERE t.wallet_id = p_wallet), 0)
      INTO v_live, v_held
      FROM ln_takes t JOIN ln_invoices i ON i.payment_hash = t.payment_hash
     WHERE t.person = v_person AND NOT t.done AND t.at >= p_live_since
       AND i.status = 'open';
    -- The caller's key on another invoice's take, in flight or just done: refused before
    -- this invoice leaves the node (the key's answer is the other payment's).
    IF p_request <> '' AND EXISTS (SELECT 1 FROM ln_takes t
                                    WHERE t.request = p_request AND t.payment_hash <> p_hash
                                      AND t.at >= p_live_since) THEN
        RETURN 'same-request';
    END IF;
    IF v_live >= p_cap THEN
        RETURN 'busy';
    END IF;
    IF p_check_balance THEN
        SELECT a.credits_posted - a.debits_posted - a.debits_pending INTO v_free
          FROM wallets w JOIN ledger_accounts a ON a.id = w.ledger_account_id
         WHERE w.id = p_wallet;
        IF coalesce(v_free, 0) - v_held < p_amount THEN
            RETURN 'funds';
        END IF;
    END IF;
    DELETE FROM ln_takes t WHERE t.person = v_person AND t.at < p_refusals_since;
    INSERT INTO ln_takes AS t (payment_hash, wallet_id, person, amount_msat, request, at)
    VALUES (p_hash, p_wallet, v_person, p_amount, p_request, p_now)
    ON CONFLICT (payment_hash) DO UPDATE
       SET wallet_id = excluded.wallet_id, person = excluded.person,
           amount_msat = excluded.amount_msat, request = excluded.request, at = excluded.at,
           done = false
     WHERE t.at < p_live_since
    RETURNING 1 INTO v_done;
    IF v_done IS NULL THEN
        RETURN 'invoice-busy';
    END IF;
    RETURN 'taken';
END
$fn$
"""

# 0082's, for the downgrade.
_TAKE_0082 = """
CREATE OR REPLACE FUNCTION ln_take(p_hash varchar, p_wallet varchar, p_amount numeric,
                        p_request varchar,
                        p_now timestamptz, p_live_since timestamptz,
                        p_refusals_since timestamptz, p_budget integer, p_cap integer,
                        p_check_balance boolean)
RETURNS text
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_person text;
    v_refusals integer;
    v_live integer;
    v_same_request integer;
    v_held numeric;
    v_free numeric;
    v_done integer;
BEGIN
    SELECT CASE WHEN w.owner_type = 'merchant'
                THEN coalesce((SELECT m.owner_user_id FROM merchants m WHERE m.id = w.owner_id),
                              w.owner_id)
                ELSE w.owner_id END
      INTO v_person FROM wallets w WHERE w.id = p_wallet;
    IF v_person IS NULL THEN
        RETURN 'no-wallet';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('ln_take:' || v_person, 0));
    IF NOT EXISTS (SELECT 1 FROM ln_invoices i
                    WHERE i.payment_hash = p_hash AND i.status = 'open') THEN
        RETURN 'not-open';
    END IF;
    -- A twin (the same caller's key, the same invoice) rides on the take in flight: both
    -- ask the node to cancel (harmless twice), and the key's row decides between them.
    IF p_request <> '' AND EXISTS (SELECT 1 FROM ln_takes t
                                    WHERE t.payment_hash = p_hash AND t.request = p_request
                                      AND t.at >= p_live_since) THEN
        RETURN 'taken';
    END IF;
    SELECT count(*) INTO v_refusals FROM internal_refusals r
     WHERE r.person = v_person AND r.at >= p_refusals_since;
    IF v_refusals >= p_budget THEN
        RETURN 'too-often:' || v_refusals;
    END IF;
    SELECT count(*), count(*) FILTER (WHERE p_request <> '' AND t.request = p_request),
           coalesce(sum(t.amount_msat) FILTER (WHERE t.wallet_id = p_wallet), 0)
      INTO v_live, v_same_request, v_held
      FROM ln_takes t JOIN ln_invoices i ON i.payment_hash = t.payment_hash
     WHERE t.person = v_person AND t.at >= p_live_since AND i.status = 'open';
    IF v_same_request > 0 THEN
        RETURN 'same-request';
    END IF;
    IF v_live >= p_cap THEN
        RETURN 'busy';
    END IF;
    IF p_check_balance THEN
        SELECT a.credits_posted - a.debits_posted - a.debits_pending INTO v_free
          FROM wallets w JOIN ledger_accounts a ON a.id = w.ledger_account_id
         WHERE w.id = p_wallet;
        IF coalesce(v_free, 0) - v_held < p_amount THEN
            RETURN 'funds';
        END IF;
    END IF;
    DELETE FROM ln_takes t WHERE t.person = v_person AND t.at < p_refusals_since;
    INSERT INTO ln_takes AS t (payment_hash, wallet_id, person, amount_msat, request, at)
    VALUES (p_hash, p_wallet, v_person, p_amount, p_request, p_now)
    ON CONFLICT (payment_hash) DO UPDATE
       SET wallet_id = excluded.wallet_id, person = excluded.person,
           amount_msat = excluded.amount_msat, request = excluded.request, at = excluded.at
     WHERE t.at < p_live_since
    RETURNING 1 INTO v_done;
    IF v_done IS NULL THEN
        RETURN 'invoice-busy';
    END IF;
    RETURN 'taken';
END
$fn$
"""

_PG = [
    """
    CREATE FUNCTION ln_take_end() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        UPDATE ln_takes SET done = true WHERE payment_hash = NEW.payment_hash AND NOT done;
        RETURN NULL;
    END
    $fn$
    """,
    """
    CREATE TRIGGER ln_take_end AFTER UPDATE OF status ON ln_invoices FOR EACH ROW
    WHEN (OLD.status = 'open' AND NEW.status <> 'open') EXECUTE FUNCTION ln_take_end()
    """,
    # The takes already over.
    """
    UPDATE ln_takes t SET done = true FROM ln_invoices i
     WHERE i.payment_hash = t.payment_hash AND i.status <> 'open'
    """,
    _TAKE,
]

_SQLITE = [
    """
    CREATE TRIGGER ln_take_end AFTER UPDATE OF status ON ln_invoices FOR EACH ROW
    WHEN OLD.status = 'open' AND NEW.status <> 'open'
    BEGIN
        UPDATE ln_takes SET done = 1 WHERE payment_hash = NEW.payment_hash AND NOT done;
    END
    """,
    """
    UPDATE ln_takes SET done = 1 WHERE payment_hash IN (
        SELECT payment_hash FROM ln_invoices WHERE status <> 'open')
    """,
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("ln_takes", sa.Column("done", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.create_index("ix_ln_takes_live", "ln_takes", ["person", "at"],
                    postgresql_where=sa.text("NOT done"), sqlite_where=sa.text("NOT done"))
    op.create_index("ix_ln_takes_request", "ln_takes", ["request", "at"],
                    postgresql_where=sa.text("request <> ''"),
                    sqlite_where=sa.text("request <> ''"))
    for statement in _SQLITE if sqlite else _PG:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER ln_take_end")
    else:
        op.execute("DROP TRIGGER ln_take_end ON ln_invoices")
        op.execute("DROP FUNCTION ln_take_end()")
        op.execute(_TAKE_0082)
    op.drop_index("ix_ln_takes_request", table_name="ln_takes")
    op.drop_index("ix_ln_takes_live", table_name="ln_takes")
    op.drop_column("ln_takes", "done")
