"""payments taking our invoices off the node are known to each other before the node is asked

Found from outside: paying one of our invoices takes it off the node before the unit of work
decides, and every check made before (the payer's balance, the person's budget of refusals,
``internal_refusals_per_day``) read without a lock. A burst of payments at once each passed
them alone: 6 of 600 sat from a wallet holding 1,000 cancelled 5 other people's invoices, 20
at a shop's checkout invoices cancelled 19, and 20 sharing one Idempotency-Key cancelled 19
before 19 were answered "key reused".

``ln_takes`` records each take, written under the paying person's lock before the node is
asked (:mod:`satvault.lightning.takes`); a take is in flight while its invoice is still
``open`` here and it is younger than two minutes. A new take is refused before the node is
asked when the person used the budget, has ``internal_payments_in_flight`` takes in flight,
when the wallet's balance less its takes in flight does not cover it, or when another take
in flight carries the same caller's Idempotency-Key (for another invoice: the same invoice
under the same key is a twin, which rides on it) or the same invoice. On PostgreSQL all of
it is one call of ``ln_take`` (the person's advisory lock, then each read in a statement of
its own, so with a snapshot taken after the lock); SQLite's one writer is the lock there.

Revision ID: 0082_ln_takes
Revises: 0081_known_devices
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0082_ln_takes"
down_revision: str | None = "0081_known_devices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The results, as satvault.lightning.takes names them.
_TAKE = """
CREATE FUNCTION ln_take(p_hash varchar, p_wallet varchar, p_amount numeric, p_request varchar,
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


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    op.create_table(
        "ln_takes",
        sa.Column("payment_hash", sa.String(64), primary_key=True),
        sa.Column("wallet_id", sa.String(40), nullable=False),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("request", sa.String(64), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_msat > 0", name=op.f("ck_ln_takes_amount")),
    )
    op.create_index("ix_ln_takes_person_at", "ln_takes", ["person", "at"])
    if not sqlite:
        op.execute(_TAKE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION ln_take(varchar, varchar, numeric, varchar, timestamptz, "
                   "timestamptz, timestamptz, integer, integer, boolean)")
    op.drop_index("ix_ln_takes_person_at", table_name="ln_takes")
    op.drop_table("ln_takes")
