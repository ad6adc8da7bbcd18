"""the withdrawal limits count a person's wallets together: a user's own wallet and the
wallets of the merchants the user owns

The KYC tiers' 24-hour and 30-day windows and the platform's rolling 24-hour limit counted one
wallet's withdrawals, so a user opened a merchant (any signed-in user can, from the dashboard)
and had a second allowance, a third with a second merchant. A wallet's *limit group* is now
every wallet (of its asset) of the person behind it:

* a user's wallet: the user's wallets and those of every merchant whose ``owner_user_id`` is
  the user;
* a merchant's wallet: its owner's group, or the merchant's own wallet for a merchant nobody
  owns;
* a wallet of any other owner: itself.

The tier is still the paying wallet's owner's (a merchant reviewed as a business has its
own), and the per-transaction limit is untouched; what the windows count is the group's.

``limit_wallets(wallet)`` names the group (through the new index on
``merchants.owner_user_id``), ``limit_spent_since`` adds up 0050's ``risk_spent_since`` over
it (the checks that lock nothing: views, the checks before a remote call), and
``withdrawal_usage`` (the check every withdrawal runs, in its one statement) locks the
wallet's row as before, then the person (a transaction-level advisory lock, key ``(60,
hashtext(person))``), then sums the group with a snapshot taken after both: two withdrawals
from two wallets of one person are counted one after the other, as two from one wallet were.
The wallet's row comes first because the risk screening takes it before the limits do.
SQLite (one writer at a time) reads the same group in ``satvault.payouts.service``.
``withdrawal_usage`` keeps 0042's ``ROWS 1`` (a replacement resets it; the internal payment's
guarded INSERT would be planned again on every payment).

Both PL/pgSQL functions run their statements on generic plans (``plan_cache_mode``): the sums'
statement (three ``risk_spent_since`` inlined) was planned anew on every call, its custom plan
always estimated cheaper than the generic one, ~1.5-2 ms of planning (0.25 ms to run) under
the wallet's lock on every withdrawal since 0039. Measured in docs/benchmarks.md.

Revision ID: 0061_owner_limits
Revises: 0060_accepted_rates
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0061_owner_limits"
down_revision: str | None = "0060_accepted_rates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The person behind a wallet (``w``, with its merchant ``m`` outer-joined): the merchant's
# owner, else the owner itself.
_PERSON = ("CASE WHEN w.owner_type = 'merchant' THEN coalesce(m.owner_user_id, w.owner_id) "
           "ELSE w.owner_id END")

# A person's wallets of one asset: the user's own, those of the merchants the user owns, and
# (``p_alone``) the paying wallet itself when nobody stands behind it but its owner (a
# merchant nobody owns). Index probes only: the wallets' (owner_type, owner_id, asset) and
# merchants.owner_user_id.
_GROUP_OF = """
CREATE FUNCTION limit_group(p_person text, p_asset text, p_wallet text, p_alone boolean)
RETURNS TABLE (id text)
LANGUAGE sql STABLE AS $fn$
    SELECT u.id FROM wallets u
     WHERE u.owner_type = 'user' AND u.owner_id = p_person AND u.asset = p_asset
    UNION ALL
    SELECT x.id FROM merchants o
      JOIN wallets x ON x.owner_type = 'merchant' AND x.owner_id = o.id AND x.asset = p_asset
     WHERE o.owner_user_id = p_person
    UNION ALL
    SELECT p_wallet WHERE p_alone
$fn$
"""

_GROUP = f"""
CREATE FUNCTION limit_wallets(p_wallet text)
RETURNS TABLE (id text)
LANGUAGE sql STABLE AS $fn$
    SELECT g.id
      FROM (SELECT {_PERSON} AS person, w.asset,
                   w.owner_type <> 'user' AND {_PERSON} = w.owner_id AS alone
              FROM wallets w
              LEFT JOIN merchants m ON w.owner_type = 'merchant' AND m.id = w.owner_id
             WHERE w.id = p_wallet) AS me,
           LATERAL limit_group(me.person, me.asset, p_wallet, me.alone) AS g
$fn$
"""

# One statement per wallet of the group, each 0050's three sums as before (a join of the
# group with the sums, inlined into one statement, was planned anew on most calls: ~1.5 ms).
_SPENT = """
CREATE FUNCTION limit_spent_since(p_wallet text, p_method text, p_since timestamptz)
RETURNS TABLE (total numeric)
LANGUAGE plpgsql STABLE ROWS 1 SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_id text;
    v_part numeric;
BEGIN
    total := 0;
    FOR v_id IN SELECT g.id FROM limit_wallets(p_wallet) AS g LOOP
        SELECT s.total INTO v_part FROM risk_spent_since(v_id, p_method, p_since) AS s;
        total := total + v_part;
    END LOOP;
    RETURN NEXT;
END
$fn$
"""

_USAGE = f"""
CREATE OR REPLACE FUNCTION withdrawal_usage(p_wallet varchar, p_method varchar,
                                            p_day timestamptz, p_month timestamptz)
RETURNS TABLE(spent_day numeric, rail_day numeric, rail_month numeric, frozen boolean)
LANGUAGE plpgsql VOLATILE ROWS 1 SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_person text;
    v_asset text;
    v_alone boolean;
    v_id text;
BEGIN
    SELECT w.frozen_at IS NOT NULL, {_PERSON}, w.asset,
           w.owner_type <> 'user' AND {_PERSON} = w.owner_id
      INTO frozen, v_person, v_asset, v_alone
      FROM wallets w
      LEFT JOIN merchants m ON w.owner_type = 'merchant' AND m.id = w.owner_id
     WHERE w.id = p_wallet FOR UPDATE OF w;
    PERFORM pg_advisory_xact_lock(60, hashtext(v_person));
    spent_day := 0;
    rail_day := 0;
    rail_month := 0;
    FOR v_id IN SELECT g.id FROM limit_group(v_person, v_asset, p_wallet, v_alone) AS g LOOP
        SELECT spent_day + a.total, rail_day + b.total, rail_month + c.total
          INTO spent_day, rail_day, rail_month
          FROM risk_spent_since(v_id, NULL, p_day) AS a,
               risk_spent_since(v_id, p_method, p_day) AS b,
               risk_spent_since(v_id, p_method, p_month) AS c;
    END LOOP;
    frozen := coalesce(frozen, false);
    RETURN NEXT;
END
$fn$
"""


def _usage_0039() -> str:
    """``withdrawal_usage`` as migration 0039 wrote it (the wallet's own sums)."""
    earlier = load("2026_12_05_0039_risk_rollups.py")
    (usage,) = [s for s in earlier._statements(earlier._LIMITS) if "withdrawal_usage" in s]
    return str(usage)


def upgrade() -> None:
    op.create_index("ix_merchants_owner_user_id", "merchants", ["owner_user_id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in (_GROUP_OF, _GROUP, _SPENT, _USAGE):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_usage_0039())
        # 0042's estimate, which a CREATE OR REPLACE resets.
        op.execute("ALTER FUNCTION withdrawal_usage(varchar, varchar, timestamptz, timestamptz) "
                   "ROWS 1")
        op.execute("DROP FUNCTION limit_spent_since(text, text, timestamptz)")
        op.execute("DROP FUNCTION limit_wallets(text)")
        op.execute("DROP FUNCTION limit_group(text, text, text, boolean)")
    op.drop_index("ix_merchants_owner_user_id", table_name="merchants")
