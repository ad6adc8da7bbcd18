"""the risk screening reads the person's windows beside the wallet's: every wallet of the
person behind the paying one, as the withdrawal limits count them since 0061

The velocity windows, the distinct destinations and the structuring band counted one
wallet's payments, so payments spread over a user's wallet and the merchants the user owns
stayed under a velocity rule on each. ``risk_screen_features`` now returns, after the
wallet's columns, the person's (``person.*``): how many wallets (0061's ``limit_group``), the
four windows' count, sum and sum of squares of both directions, the distinct destinations,
and the structuring band's count of both directions. The rules name them as
``person.agg.*``, ``person.velocity.*`` and ``person.structuring_count``
(``satvault.risk.rules``); the wallet's own features are unchanged.

* **The lock.** With ``p_lock`` and the new ``p_person`` (money out), the function takes the
  person's transaction-level advisory lock (0061's key ``(60, hashtext(person))``) after the
  wallet's row, as ``withdrawal_usage`` does later in the same transaction: two payments out
  of two wallets of one person are screened one after the other, each seeing the other's
  withdrawal. A deposit's screening does not take it: an internal payment between two
  wallets of one person holds the person (its screening, its limits) while it credits the
  payee under the payee's row lock, and a deposit into the payee, holding that row, would
  wait for the person the other way round. Money in of the person is thus read as committed.
* **Sums** (counts, sums, squares, bands) are the wallet's columns plus the other wallets':
  their money out from the roll-ups (``risk_out_window``, 0039/0053, one call per window and
  wallet), their money in from the roll-ups up to each account's mark plus the credits drawn
  after it, read and not folded (``risk_in_window_read``: a screening folds only its own
  account, so it never takes another account's fold lock; the band from the rows when the
  account's buckets were folded with another band).
* **Distinct destinations** are not a sum (one destination paid from two wallets is one).
  The group's wallets are ranked by their 30-day distinct destinations (their roll-ups): the
  first one's count per window (``risk_party_window``) plus, for each other wallet in turn,
  its destinations (``risk_last_paid`` and its withdrawals released in the window) that no
  wallet ranked before it paid within the window (a primary-key probe each). What is read
  row by row is the destinations of the person's wallets but the busiest one, bounded by
  those, not by the payments.

A person alone (a user without merchants, a merchant nobody owns: every wallet until its
owner opens a merchant) reads none of it: the person's columns are the wallet's, for one more
index probe and the advisory lock (the function's statement for a person alone is 0053's, the
other one only runs for a person of several wallets, the other wallets' part in a function of
its own, ``risk_person_windows``). SQLite reads the rows (``satvault.risk.features._query``),
which the tests hold the function to.

**Generic plans.** Measuring this change found that the feature statement was planned anew on
every call (its custom plan always estimated cheaper than the generic one, as 0061 found for
the limits' sums): on a busy payer (3,000 payments and 3,000 credits in the month) ~15 ms of a
~17 ms call on a loaded 2-vCPU machine, ~1.7 ms on its generic plan. Both functions now run
their statements on generic plans (``plan_cache_mode``). Measured in docs/benchmarks.md.

Revision ID: 0067_person_risk_windows
Revises: 0066_outbox_ids_never_reused
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0067_person_risk_windows"
down_revision: str | None = "0066_outbox_ids_never_reused"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOWS = ("1h", "24h", "7d", "30d")
_DEAD = "('failed', 'cancelled')"

# An account's money in within a window, without folding its credits (0040's buckets up to
# its mark, the credits after the mark from the rows).
_IN_READ = """
CREATE FUNCTION risk_in_window_read(p_account bigint, p_since timestamptz, p_low numeric,
                                    p_top numeric)
RETURNS TABLE (n numeric, total numeric, sq numeric, band numeric)
LANGUAGE sql STABLE AS $fn$
    SELECT r.n + t.n, r.total + t.total, r.sq + t.sq,
           CASE WHEN k.same THEN r.band + t.band ELSE (
               -- Its buckets hold another band's count (folded before the rule set moved
               -- it; its next screening rebuilds them): the rows'.
               SELECT count(*) FROM ledger_transfers b
                WHERE b.credit_account_id = p_account AND b.kind IN ('single', 'post')
                  AND b.created_at >= p_since AND b.amount >= p_low AND b.amount < p_top)
           END
      FROM (SELECT coalesce(max(m.seq), 0) AS mark,
                   coalesce(bool_and(m.band_low IS NOT DISTINCT FROM p_low
                                     AND m.band_top IS NOT DISTINCT FROM p_top), true) AS same
              FROM risk_in_marks m WHERE m.account_id = p_account) AS k,
           LATERAL risk_in_window(p_account, p_since, k.mark, p_low, p_top) AS r,
           LATERAL (
            -- The credits drawn after the mark: one range of ix_ledger_transfers_credit, as
            -- risk_in_fold reads them (0043).
            SELECT count(*) AS n, coalesce(sum(c.amount), 0) AS total,
                   coalesce(sum(c.amount * c.amount), 0) AS sq,
                   count(*) FILTER (WHERE c.amount >= p_low AND c.amount < p_top) AS band
              FROM ledger_transfers c
             WHERE c.credit_account_id >= p_account AND c.credit_account_id <= p_account
               AND (c.credit_account_id, c.seq) > (p_account, k.mark)
               AND (c.credit_account_id, c.seq) < (p_account + 1, 0)
               AND c.kind IN ('single', 'post') AND c.created_at >= p_since) AS t
$fn$
"""

_PERSON = ("CASE WHEN w.owner_type = 'merchant' THEN coalesce(m.owner_user_id, w.owner_id) "
           "ELSE w.owner_id END")

# What the function's text gains, each (before, after) found exactly once in 0053's text as
# the server prints it; the downgrade takes each back.
_HEADER_ARGS = ("p_low numeric, p_top numeric)",
                "p_low numeric, p_top numeric, p_person boolean DEFAULT true)")
_RETURNS = ", ".join(
    ['"person.wallets" bigint']
    + [f'"person.{d}.{m}.{w}" {"bigint" if m == "count" else "double precision"}'
       for d in ("out", "in") for w in _WINDOWS for m in ("count", "sum", "sq")]
    + [f'"person.out.counterparties.{w}" bigint' for w in _WINDOWS]
    + ['"person.out.band" bigint', '"person.in.band" bigint'])
_HEADER_RETURNS = ("wallet text)", f"wallet text, {_RETURNS})")

_DECLARE = ("#variable_conflict use_column\nBEGIN\n", """#variable_conflict use_column
DECLARE
    v_person text;     -- the person behind the wallet (0061)
    v_others text[];   -- their other wallets of this asset; NULL when alone
BEGIN
""")

_LOCK_END = """        PERFORM 1 FROM wallets WHERE wallets.id = p_wallet FOR UPDATE;
    END IF;
"""
_PERSON_LOCK = (_LOCK_END, _LOCK_END + f"""    SELECT me.person,
           (SELECT array_agg(g.id ORDER BY g.id)
              FROM limit_group(me.person, me.asset, p_wallet, me.alone) AS g
             WHERE g.id <> p_wallet)
      INTO v_person, v_others
      FROM (SELECT {_PERSON} AS person, w.asset,
                   w.owner_type <> 'user' AND {_PERSON} = w.owner_id AS alone
              FROM wallets w
              LEFT JOIN merchants m ON w.owner_type = 'merchant' AND m.id = w.owner_id
             WHERE w.id = p_wallet) AS me;
    IF p_lock AND p_person AND v_person IS NOT NULL THEN
        -- The person's lock, after the wallet's row (as withdrawal_usage takes them): two
        -- payments out of two wallets of one person are screened one after the other.
        PERFORM pg_advisory_xact_lock(60, hashtext(v_person));
    END IF;
""")

_WALLET_COLUMN = "(SELECT wl.id FROM wallets wl WHERE wl.id = p_wallet)::text\n"


def _person_columns(alone: bool) -> str:
    """The person's columns after the wallet's: alone, the wallet's own again; else the
    wallet's plus the other wallets' (``x``: risk_person_windows)."""
    cols = ["(CASE WHEN v_person IS NULL THEN 0 ELSE 1 + coalesce(cardinality(v_others), 0) "
            "END)::bigint"]
    for d, q in (("out", "o"), ("in", "i")):
        for w in _WINDOWS:
            for m in ("count", "sum", "sq"):
                cast = "bigint" if m == "count" else "float8"
                own = f'{q}."{d}.{m}.{w}"'
                cols.append(own if alone else f'({own} + x."{d}.{m}.{w}")::{cast}')
    cols += [f'p."out.counterparties.{w}"' if alone else f'x."party.{w}"' for w in _WINDOWS]
    cols += ['o."out.band"', 'i."in.band"'] if alone else [
        '(o."out.band" + x."out.band")::bigint', '(i."in.band" + x."in.band")::bigint']
    return (_WALLET_COLUMN.rstrip("\n") + ",\n        " + ",\n        ".join(cols) + "\n")


_LAST_JOIN = "WHERE a.address = ANY (p_parties)) AS l ON true"
_PERSON_JOIN = (_LAST_JOIN + "\n    JOIN risk_person_windows(p_wallet, v_others, p_since, "
                "p_since_1h, p_since_24h, p_since_7d, p_since_30d, p_s_since, p_low, p_top) "
                "AS x ON true")


def _others() -> str:
    """The other wallets' sums (one row)."""
    cols = []
    for w in _WINDOWS:
        cols += [f'coalesce(sum(xo{w}.n), 0)::bigint AS "out.count.{w}"',
                 f'coalesce(sum(xo{w}.total), 0)::float8 AS "out.sum.{w}"',
                 f'coalesce(sum(xo{w}.sq), 0)::float8 AS "out.sq.{w}"']
    cols.append('coalesce(sum(xob.n), 0)::bigint AS "out.band"')
    for w in _WINDOWS:
        cols += [f'coalesce(sum(xi{w}.n), 0)::bigint AS "in.count.{w}"',
                 f'coalesce(sum(xi{w}.total), 0)::float8 AS "in.sum.{w}"',
                 f'coalesce(sum(xi{w}.sq), 0)::float8 AS "in.sq.{w}"']
    cols.append('coalesce(sum(xib.band), 0)::bigint AS "in.band"')
    joins = [f"CROSS JOIN LATERAL risk_out_window(xw.id, p_since_{w}) AS xo{w}"
             for w in _WINDOWS]
    # 0053's band of the wallet's withdrawals (asked for, or released, in it), per wallet.
    band = " AND ".join(("b.wallet_id = xw.id", "b.amount_msat >= p_low",
                         "b.amount_msat < p_top", f"b.status NOT IN {_DEAD}"))
    joins.append(
        "CROSS JOIN LATERAL (SELECT "
        f"(SELECT count(*) FROM withdrawals b WHERE {band} AND b.created_at >= p_s_since "
        "AND b.created_at >= p_since) + "
        f"(SELECT count(*) FROM withdrawals b WHERE {band} "
        "AND b.released_at >= greatest(p_s_since, p_since) "
        "AND b.created_at < greatest(p_s_since, p_since)) AS n) AS xob")
    joins += [f"CROSS JOIN LATERAL risk_in_window_read(xa.ledger_account_id, p_since_{w}, "
              f"p_low, p_top) AS xi{w}" for w in _WINDOWS]
    joins.append("CROSS JOIN LATERAL risk_in_window_read(xa.ledger_account_id, "
                 "greatest(p_s_since, p_since), p_low, p_top) AS xib")
    return ("""(SELECT
              """ + ",\n              ".join(cols) + """
            FROM unnest(p_others) AS xw(id)
            JOIN wallets xa ON xa.id = xw.id
            """ + "\n            ".join(joins) + ")")


def _parties() -> str:
    """The person's distinct destinations per window (see the module docstring)."""
    fresh = ", ".join(
        f"count(*) FILTER (WHERE m.t >= p_since_{w} AND NOT coalesce(m.prior >= p_since_{w},"
        f" false)) AS n{w}" for w in _WINDOWS)
    firsts = "\n              ".join(
        f"CROSS JOIN LATERAL risk_party_window(g1.id, p_since_{w}) AS f{w}" for w in _WINDOWS)
    sums = ", ".join(f'(f{w}.n + c.n{w})::bigint AS "party.{w}"' for w in _WINDOWS)
    return f"""(
            WITH grp AS MATERIALIZED (  -- the person's wallets, the busiest first
                SELECT g.id, row_number() OVER (ORDER BY r.n DESC, g.id) AS i
                  FROM unnest(array_append(p_others, p_wallet)) AS g(id)
                 CROSS JOIN LATERAL risk_rollup_window(g.id, 'party', p_since) AS r),
            released AS MATERIALIZED (  -- their withdrawals released in the 30 days
                SELECT e.wallet_id::text AS id,
                       sha256(convert_to(e.destination, 'UTF8')) AS key,
                       max(e.released_at) AS t
                  FROM withdrawals e
                 WHERE e.wallet_id = ANY (array_append(p_others, p_wallet))
                   AND e.released_at >= p_since AND e.status NOT IN {_DEAD}
                 GROUP BY 1, 2),
            cand AS (  -- each later wallet's destinations, paid last at t
                SELECT g.i, d.key, max(d.t) AS t
                  FROM grp g
                 CROSS JOIN LATERAL (
                    SELECT l.key, l.last_at AS t FROM risk_last_paid l
                     WHERE l.wallet_id = g.id AND l.last_at >= p_since
                    UNION ALL
                    SELECT e.key, e.t FROM released e WHERE e.id = g.id) AS d
                 WHERE g.i > 1
                 GROUP BY g.i, d.key),
            marked AS (  -- and when a wallet ranked before it paid the same one last
                SELECT c.t, greatest(max(l.last_at), max(e.t)) AS prior
                  FROM cand c
                  JOIN grp h ON h.i < c.i
                  LEFT JOIN risk_last_paid l ON l.wallet_id = h.id AND l.key = c.key
                  LEFT JOIN released e ON e.id = h.id AND e.key = c.key
                 GROUP BY c.i, c.key, c.t)
            SELECT {sums}
              FROM grp g1
              {firsts}
              CROSS JOIN (SELECT {fresh} FROM marked m) AS c
             WHERE g1.i = 1)"""


_PERSON_RETURNS = ", ".join(
    [f'"{d}.{m}.{w}" {"bigint" if m == "count" else "double precision"}'
     for d in ("out", "in") for w in _WINDOWS for m in ("count", "sum", "sq")]
    + ['"out.band" bigint', '"in.band" bigint']
    + [f'"party.{w}" bigint' for w in _WINDOWS])
_PERSON_COLS = ", ".join(
    [f'x."{d}.{m}.{w}"' for d in ("out", "in") for w in _WINDOWS
     for m in ("count", "sum", "sq")]
    + ['x."out.band"', 'x."in.band"'] + [f'pp."party.{w}"' for w in _WINDOWS])


def _person_windows() -> str:
    """The other wallets' part of the person's columns, in a function of its own: planned
    once per session (a generic plan), and only for a person with more than one wallet."""
    return f"""
CREATE FUNCTION risk_person_windows(p_wallet text, p_others text[], p_since timestamptz,
                                    p_since_1h timestamptz, p_since_24h timestamptz,
                                    p_since_7d timestamptz, p_since_30d timestamptz,
                                    p_s_since timestamptz, p_low numeric, p_top numeric)
RETURNS TABLE ({_PERSON_RETURNS})
LANGUAGE plpgsql STABLE ROWS 1 SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT {_PERSON_COLS}
      FROM {_others()} AS x
      CROSS JOIN {_parties()} AS pp;
END
$fn$
"""


_QUERY = "    RETURN QUERY\n"
_QUERY_END = ";\nEND\n"
_ALONE = "    IF v_others IS NULL THEN  -- alone: the person's columns are the wallet's\n"
_ELSE = ";\n    ELSE\n"
_END_IF = ";\n    END IF;\nEND\n"

# Its statements on generic plans, as 0061's limit functions: the feature statement was
# planned anew on every call (its custom plan always estimated cheaper), most of a call's time.
_GENERIC = (" ROWS 1\n", " ROWS 1\n SET plan_cache_mode TO 'force_generic_plan'\n")

_EDITS = (_HEADER_ARGS, _HEADER_RETURNS, _GENERIC, _DECLARE, _PERSON_LOCK)


def _definition() -> str:
    found: str = op.get_bind().exec_driver_sql(
        "SELECT pg_get_functiondef('risk_screen_features'::regproc)").scalar_one()
    return found


def _replace(found: str, edits: Sequence[tuple[str, str]]) -> str:
    for old, new in edits:
        assert found.count(old) == 1, f"risk_screen_features is not the body expected: {old!r}"
        found = found.replace(old, new)
    return found


def _with_person(found: str) -> str:
    """0053's function with the person's columns (see the module docstring)."""
    head, rest = found.split(_QUERY)
    statement, tail = rest.split(_QUERY_END)
    alone = _replace(statement, [(_WALLET_COLUMN, _person_columns(alone=True))])
    person = _replace(statement, [(_WALLET_COLUMN, _person_columns(alone=False)),
                                  (_LAST_JOIN, _PERSON_JOIN)])
    return (_replace(head, _EDITS) + _ALONE + "    " + _QUERY + alone + _ELSE + "    " + _QUERY
            + person + _END_IF + tail)


def _without_person(found: str) -> str:
    head, rest = found.split(_ALONE)
    alone = rest.split(_ELSE)[0].removeprefix("    " + _QUERY)
    statement = _replace(alone, [(_person_columns(alone=True), _WALLET_COLUMN)])
    tail = rest.split(_END_IF)[1]
    return (_replace(head, [(new, old) for old, new in reversed(_EDITS)]) + _QUERY + statement
            + _QUERY_END + tail)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite reads the rows (satvault.risk.features._query)
    op.execute(_IN_READ)
    op.execute(_person_windows())
    new = _with_person(_definition())
    # Other columns and arguments: a new function (its text keeps 0042's ROWS 1).
    op.execute("DROP FUNCTION risk_screen_features")
    op.execute(new)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    old = _without_person(_definition())
    op.execute("DROP FUNCTION risk_screen_features")
    op.execute(old)
    op.execute("DROP FUNCTION risk_person_windows")
    op.execute("DROP FUNCTION risk_in_window_read(bigint, timestamptz, numeric, numeric)")
