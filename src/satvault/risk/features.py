"""The features a rule set reads, for one event: ONE statement whatever the rules.

The query reads a fixed set — for both directions and the four windows, count, sum, sum of
squares (mean and standard deviation follow) and distinct counterparties; the structuring
band's count; the money that came in within the rapid-movement window; earlier withdrawals to
this destination; the operator's labels of the destination and counterparty; the owner's KYC
tier — as conditional aggregates over one-row subqueries (the account's withdrawals and its
ledger credits in the last 30 days, through their indexes; the withdrawals' destinations
grouped once for the distinct counts), so a rule set of 20 rules or 200 costs the same
statement. What reads the wallet's history reads 30 days of it at most: earlier rows cost
nothing, and ``seen`` probes an index by destination (migration 0037). What the rules then do
with them is pure (:func:`satvault.risk.rules.evaluate`).

On PostgreSQL the statement is sent as one call of ``risk_screen_features`` (migration 0035,
its body replaced by 0037, 0039, 0040, 0041, 0053 and 0067), which takes the wallet's row lock
first and then reads the same features: the lock and the features in one round trip. Since
0039 it reads the outgoing windows (count, sum, sum of squares, distinct destinations) from
roll-ups a trigger on ``withdrawals`` keeps per wallet and minute, hour and day, and since
0040 the incoming ones from roll-ups it folds itself (the account's credits drawn since its
last screening), each plus the rows of the window's first partial minute: exact, and bounded
whatever the wallet's month holds (a busy payer's or store's screening no longer grows with
its payments); since 0053 each window adds the withdrawals released inside it but asked for
before it (an index probe that finds nothing for a wallet whose withdrawals never waited).
Since 0067 the row also holds the person's windows (``person.*``: every wallet of the person
behind the paying one, as the withdrawal limits count them since 0061, see
:mod:`satvault.accounts.persons`): the same counts, sums and squares of both directions, the
band, and the distinct destinations (one paid from two wallets is one). The function takes
the person's advisory lock after the wallet's row (for deposits too since 0067's callers pass
``p_person`` for both directions), so two payments out of, or deposits into, two wallets of
one person are screened one after the other; a person alone (most) reads nothing
more, the others' money out comes from their roll-ups and their money in from theirs up to
each account's mark plus the credits after it, read and not folded (a screening folds only
its own account's). SQLite runs :func:`_query`, which reads the rows themselves; it is also
the reference the function is tested against. A change to :func:`_query` needs a migration
that changes the function too (``tests/risk/test_screening_path.py``,
``tests/risk/test_held_velocity.py`` and ``tests/risk/test_person_windows.py`` compare the
two, and the roll-ups with the rows).

Money out is the account's ``withdrawals`` rows (every rail: on-chain, Lightning, internal,
refunds; failed and cancelled ones excepted; held ones included). A withdrawal held for
approvers or for review and released later is inside a window while its request or its
release is (``released_at``, migration 0050; the function since migration 0053), as the
limits count it: otherwise one released a day after it was asked for would be outside every
24-hour window just as its money leaves. Money in is the ledger's
single-phase or posted credits to the wallet's account (deposits on-chain and Lightning,
internal payments received): the ledger is where every rail ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Float,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.accounts.persons import other_wallets
from satvault.db import Amount, UtcDateTime
from satvault.kyc.service import tier_expr
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.lnurl import pay_link_forms
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.risk.lists import canonical_address
from satvault.risk.models import RiskAddressLabel, RiskRuleSet, RuleSetStatus
from satvault.risk.rules import WINDOWS, Params

__all__ = ["Event", "compute_features", "derive", "read_features"]


@dataclass(frozen=True, slots=True)
class Event:
    """One payment to screen. ``counterparty``: the on-chain address, or a Lightning payee's
    node public key; ``destination``: what was asked for (address, BOLT11, LNURL). A deposit
    (``in``): ``destination`` is our receiving address or invoice, ``senders`` every address
    that paid (on-chain, where the backend can tell), ``counterparty`` the first of them; all
    of them are looked up in the label lists. ``hops``: an outgoing Lightning payment's
    route-hint nodes, looked up too (found from outside: a listed node was paid through an
    invoice of a private node behind it)."""

    wallet_id: str
    ledger_account_id: int
    owner_type: str
    owner_id: str
    amount_msat: int
    direction: str  # in | out
    rail: str  # onchain | lightning | internal | refund
    destination: str
    counterparty: str
    asset: str = "BTC"
    senders: tuple[str, ...] = ()
    # An outgoing Lightning payment's route-hint nodes: the payment passes through one of
    # them to reach a private payee, so each is looked up in the lists like the payee.
    hops: tuple[str, ...] = ()
    # Other names of the payee, looked up like the destination: the Lightning Addresses an
    # LNURL-pay service's metadata names (``text/identifier``, ``text/email``).
    aliases: tuple[str, ...] = ()
    # The rail the money moves by, when ``rail`` names the purpose (``refund``): onchain,
    # lightning or internal. Empty: ``rail`` itself.
    payout_rail: str = ""


def _flt(col: Any) -> Any:
    return cast(col, Float)


def _flags(ts: Any, m: Any) -> list[Any]:
    """Per row, whether its time ``ts`` is inside each window and whether the row is in the
    structuring band: read once per row (each a bound parameter once in the statement, not
    once per aggregate that reads it)."""
    return [*((ts >= bindparam(f"since_{name}", type_=UtcDateTime())).label(f"w_{name}")
              for name in WINDOWS),
            ((ts >= bindparam("s_since", type_=UtcDateTime())) & (m >= bindparam("low"))
             & (m < bindparam("top"))).label("band")]


def _window_columns(prefix: str, rows: Any, only: Any = None) -> list[Any]:
    """Per window: count, sum and sum of squares of ``rows.c.a`` (the amount as a float,
    cast once per row) over the rows inside it (:func:`_flags`) and ``only``, as aggregate
    FILTERs; then the band's count."""
    cols = []
    band = rows.c.band if only is None else rows.c.band & only
    for name in WINDOWS:
        inside = rows.c[f"w_{name}"] if only is None else rows.c[f"w_{name}"] & only
        cols += [
            func.count().filter(inside).label(f"{prefix}.count.{name}"),
            func.coalesce(func.sum(rows.c.a).filter(inside), 0.0).label(f"{prefix}.sum.{name}"),
            func.coalesce(func.sum(rows.c.a * rows.c.a).filter(inside), 0.0)
            .label(f"{prefix}.sq.{name}"),
        ]
    return [*cols, func.count().filter(band).label(f"{prefix}.band")]


def _live(w: Any) -> Any:
    """Failed and cancelled withdrawals excepted. Spelled as two comparisons, not NOT IN with
    a list: SQLAlchemy sends a list as an "expanding" parameter, whose SQL text is rewritten
    on every execution (as is any IN list), which the feature statement should not pay."""
    return and_(w.status != WithdrawalStatus.FAILED, w.status != WithdrawalStatus.CANCELLED)


def _query(dialect: str, owner_type: str, *, many_parties: bool = False) -> Any:
    """The feature statement, built once per dialect, owner kind and party shape (values are
    bound parameters, so it is built and compiled once, not per payment)."""
    w = Withdrawal
    ts = UtcDateTime()
    since = bindparam("since", type_=ts)
    wallet: Any = bindparam("wallet")
    # A withdrawal is in a window from its request and, if it was held and released, from
    # its release (its money leaves then): it counts while either is inside, once. As a
    # release comes after its request, that is its release time, else its request time.
    moment = func.coalesce(w.released_at, w.created_at)
    recent = (or_(w.created_at >= since, w.released_at >= since), _live(w))
    # The person's other wallets (none for a person alone: nothing more is read).
    others = other_wallets(owner_type, bindparam("owner"), wallet).cte("person_others")
    # The wallet's rows (``own``) and the other wallets': asked for in the window, or
    # released in it and asked for before (two plain ranges of their indexes: an OR beside
    # ``IN``, SQLite read by status the month of every wallet).
    windows = ((w.created_at >= since,), (w.released_at >= since, w.created_at < since))
    ow = union_all(
        select(_flt(w.amount_msat).label("a"), *_flags(moment, w.amount_msat),
               literal(True).label("own")).where(w.wallet_id == wallet, *recent),
        *(select(_flt(w.amount_msat), *_flags(moment, w.amount_msat), literal(False))
          .where(w.wallet_id.in_(select(others.c.id)), _live(w), *inside)
          for inside in windows)).subquery("ow")
    out_q = select(*_window_columns("out", ow, ow.c.own),
                   *_window_columns("person.out", ow)).subquery("o")
    # A destination was paid within a window exactly when its latest live withdrawal is in
    # it: one grouped pass, then a count per window (four COUNT(DISTINCT) were four sorts);
    # the wallet's latest and the person's (one destination paid from two wallets is one).
    rows = union_all(
        select(w.destination.label("dest"), moment.label("ts"), literal(1).label("own"))
        .where(w.wallet_id == wallet, *recent),
        *(select(w.destination, moment, literal(0))
          .where(w.wallet_id.in_(select(others.c.id)), _live(w), *inside)
          for inside in windows)).subquery("dr")
    last = select(func.max(rows.c.ts).filter(rows.c.own == 1).label("last_at"),
                  func.max(rows.c.ts).label("person_last_at")) \
        .group_by(rows.c.dest).subquery("d")
    parties_q = select(*(
        func.count().filter(last.c[at] >= bindparam(f"since_{name}", type_=ts))
        .label(f"{who}out.counterparties.{name}")
        for who, at in (("", "last_at"), ("person.", "person_last_at"))
        for name in WINDOWS)).subquery("p")

    t = LedgerTransfer
    money_in = (t.created_at >= bindparam("since", type_=ts), or_(t.kind == "single",
                                                                  t.kind == "post"))
    own_in = t.credit_account_id == bindparam("account")
    it = select(_flt(t.amount).label("a"), *_flags(t.created_at, t.amount),
                (t.created_at >= bindparam("r_since", type_=ts)).label("rapid"),
                own_in.label("own")).where(
        or_(own_in, t.credit_account_id.in_(select(Wallet.ledger_account_id).where(
            Wallet.id.in_(select(others.c.id))))), *money_in).subquery("it")
    in_q = select(
        *_window_columns("in", it, it.c.own),
        func.coalesce(func.sum(it.c.a).filter(it.c.rapid & it.c.own), 0.0).label("in.rapid"),
        *_window_columns("person.in", it)).subquery("i")

    lab = RiskAddressLabel
    label_join = (func.string_agg(lab.label, literal(",")) if dialect == "postgresql"
                  else func.group_concat(lab.label, ","))
    labels = select(
        func.max(case((lab.label == "sanctioned", 1), else_=0)).label("sanctioned"),
        func.coalesce(func.sum(case((lab.label != "sanctioned", lab.score), else_=0)), 0)
        .label("label_score"),
        label_join.label("labels"),
        func.min(lab.first_seen_at).label("first_seen"),
    ).where(lab.address.in_(bindparam("parties", expanding=True)) if many_parties else
            lab.address.in_([bindparam("party_a", type_=String()),
                             bindparam("party_b", type_=String()),
                             bindparam("party_self", type_=String())])).subquery("l")

    same = or_(w.destination == bindparam("destination"),
               w.destination == bindparam("counterparty"))
    if dialect == "postgresql":
        # Through the index on (wallet_id, md5(destination)) (migration 0037): the hash
        # narrows the search, the comparison above stays exact.
        same = and_(or_(func.md5(w.destination) == func.md5(bindparam("destination")),
                        func.md5(w.destination) == func.md5(bindparam("counterparty"))), same)
    seen = select(func.count()).where(
        w.wallet_id == bindparam("wallet"), same, _live(w)).scalar_subquery()
    # The paying owner's own tier as the limits read it (its latest approved record), not
    # the users.kyc_tier cache nor, for a merchant, its owning user's: found from outside, a
    # merchant approved at KYB tier 1 whose owner is tier 0 was scored as tier 0.
    tier = tier_expr(owner_type, bindparam("owner"))
    # The live rule set (its version says whether the parameters bound above were its own)
    # and whether the wallet exists: the screening reads nothing else.
    rs = RiskRuleSet
    live = rs.status == RuleSetStatus.LIVE
    # One-row subqueries side by side (joined on true: no cartesian growth), their columns
    # in the order of migration 0035's function.
    row: list[Any] = []
    for d, q in (("out", out_q), ("in", in_q)):
        for name in WINDOWS:
            row += [q.c[f"{d}.count.{name}"], q.c[f"{d}.sum.{name}"], q.c[f"{d}.sq.{name}"],
                    parties_q.c[f"out.counterparties.{name}"] if d == "out"
                    else literal(0).label(f"in.counterparties.{name}")]
        row.append(q.c[f"{d}.band"])
    row.append(in_q.c["in.rapid"])
    # The person's: the wallet's plus the other wallets' (the distinct destinations counted
    # over them all), in the order of migration 0067's function.
    cols: list[Any] = [(select(func.count()).select_from(others).scalar_subquery()
                        + select(func.count()).where(Wallet.id == wallet).scalar_subquery())
                       .label("person.wallets")]
    for d, q in (("out", out_q), ("in", in_q)):
        cols += [q.c[f"person.{d}.{m}.{name}"] for name in WINDOWS
                 for m in ("count", "sum", "sq")]
    cols += [parties_q.c[f"person.out.counterparties.{name}"] for name in WINDOWS]
    cols += [out_q.c["person.out.band"], in_q.c["person.in.band"]]
    return select(*row, labels, seen.label("seen"),
                  func.coalesce(tier, 0).label("tier"),
                  select(rs.version).where(live).scalar_subquery().label("live_version"),
                  select(rs.created_at).where(live).scalar_subquery().label("live_created_at"),
                  select(Wallet.id).where(Wallet.id == wallet)
                  .scalar_subquery().label("wallet"), *cols,
                  ).select_from(out_q.join(parties_q, true()).join(in_q, true())
                                .join(labels, true()))


_QUERIES: dict[tuple[str, str, bool], Any] = {}

# The person's columns (migration 0067), after the wallet's: how many wallets, the windows
# (count, sum, sum of squares) of both directions, the distinct destinations, the bands.
_PERSON_COLUMNS = [
    "person.wallets",
    *(f"person.{d}.{m}.{w}" for d in ("out", "in") for w in WINDOWS
      for m in ("count", "sum", "sq")),
    *(f"person.out.counterparties.{w}" for w in WINDOWS), "person.out.band", "person.in.band"]

# PostgreSQL: the wallet's row lock and the feature statement in one round trip, through the
# function of migrations 0035 and 0037 (the lock, then the same query as :func:`_query`'s in a
# statement of its own, so with a snapshot taken after the lock was granted; its plan kept per
# session).
# Its columns named in order, so SQLAlchemy builds the result's metadata once with the
# compiled statement instead of from the cursor's description on every call (~45 columns).
_PG_COLUMNS = [
    *(f"{d}.{m}.{w}" for d in ("out",) for w in WINDOWS
      for m in ("count", "sum", "sq", "counterparties")), "out.band",
    *(f"{d}.{m}.{w}" for d in ("in",) for w in WINDOWS
      for m in ("count", "sum", "sq", "counterparties")), "in.band", "in.rapid",
    "sanctioned", "label_score", "labels", "first_seen", "seen", "tier", "live_version",
    "live_created_at", "wallet", *_PERSON_COLUMNS]
_PG_CALL = text(
    "SELECT * FROM risk_screen_features(:lock, :wallet, :account, :owner, :merchant, "
    ":destination, :counterparty, :parties, :since, :since_1h, :since_24h, :since_7d, "
    ":since_30d, :s_since, :r_since, :low, :top, :person)").bindparams(
    bindparam("lock", type_=Boolean()), bindparam("merchant", type_=Boolean()),
    bindparam("person", type_=Boolean()),
    bindparam("parties", type_=ARRAY(String())),
    *(bindparam(n, type_=UtcDateTime()) for n in (
        "since", "s_since", "r_since", *(f"since_{w}" for w in WINDOWS))),
    bindparam("low", type_=Amount()), bindparam("top", type_=Amount())).columns(
    *(column(name) for name in _PG_COLUMNS))


def _values(event: Event, params: Params, now: datetime) -> dict[str, Any]:
    top = params.structuring_threshold_msat
    values: dict[str, Any] = {
        f"since_{name}": now - timedelta(seconds=sec) for name, sec in WINDOWS.items()}
    values.update(
        since=now - timedelta(seconds=max(WINDOWS.values())),
        s_since=now - timedelta(days=params.structuring_days),
        r_since=now - timedelta(minutes=params.rapid_minutes),
        low=top - top * params.structuring_band_bp // 10_000, top=top,
        wallet=event.wallet_id, account=event.ledger_account_id, owner=event.owner_id,
        destination=event.destination, counterparty=event.counterparty)
    return values


async def read_features(session: AsyncSession, event: Event, params: Params,
                        now: datetime, *, lock: bool = False) -> dict[str, Any]:
    """The feature statement's raw row, for :func:`derive`; with it ``live_version`` and
    ``live_created_at`` (the live rule set, None if there is none) and ``wallet`` (None if
    the event's wallet does not exist). ``lock`` (PostgreSQL): take the wallet's row lock
    first, in the same round trip; the features are then read after it was granted."""
    # On the session's connection (Core), not through the ORM's execute: nothing here is an
    # ORM entity, and the ORM layer costs about a tenth of the statement's client CPU.
    conn = await session.connection()
    values = _values(event, params, now)
    if conn.dialect.name == "postgresql":
        # The person's lock, after the wallet's row, for money in as for money out: racing
        # deposits into two wallets of one person are screened one after the other too.
        values.update(lock=lock, merchant=event.owner_type != "user", parties=_parties(event),
                      person=True)
        return dict((await conn.execute(_PG_CALL, values)).mappings().one())
    kind = "user" if event.owner_type == "user" else "merchant"
    many = _many_parties(event)
    q = _QUERIES.get((conn.dialect.name, kind, many))
    if q is None:
        q = _QUERIES[(conn.dialect.name, kind, many)] = _query(
            conn.dialect.name, kind, many_parties=many)
    return dict((await conn.execute(q, _query_values(event, values))).mappings().one())


def _parties(event: Event) -> list[str]:
    """Every address whose labels count for ``event`` (destination, counterparty, senders),
    in the form the lists store (:func:`~satvault.risk.lists.canonical_address`); an LNURL-pay
    destination in each of the forms that name its service (:func:`~satvault.lightning.lnurl.
    pay_link_forms`), so a list naming it as ``bob@host`` also refuses its ``lnurlp://`` link
    or LNURL."""
    forms = {canonical_address(p) for p in (event.destination, event.counterparty,
                                            *event.senders, *event.hops, *event.aliases)}
    forms.add(_self(event))
    for name in (event.destination, *event.aliases):
        forms |= pay_link_forms(name)
    return sorted(forms - {""}) or [""]


def _self(event: Event) -> str:
    """The screened wallet itself as a list names it: a party to its own payments (found from
    outside: ``wallet:<id>`` on the sanctions list refused payments to that wallet, while the
    listed wallet paid another customer, confirmed, no case)."""
    return f"wallet:{event.wallet_id}"


def _many_parties(event: Event) -> bool:
    """Whether ``event`` names more than its destination and counterparty (the statement
    taking a list of parties, not two fixed ones)."""
    return bool(event.senders or event.hops or event.aliases
                or pay_link_forms(event.destination))


def _query_values(event: Event, values: dict[str, Any]) -> dict[str, Any]:
    """:func:`_values` with the parties as :func:`_query`'s statement for ``event`` binds
    them."""
    if _many_parties(event):
        return {**values, "parties": _parties(event)}
    # A withdrawal names two parties: two fixed parameters, not an expanding list, so the SQL
    # text is the same every time, with nothing to rewrite per call. A deposit's senders may
    # be many: that statement takes the list.
    a, b = canonical_address(event.destination), canonical_address(event.counterparty)
    return {**values, "party_a": a or b, "party_b": b or a, "party_self": _self(event)}


async def compute_features(session: AsyncSession, event: Event, params: Params,
                           now: datetime) -> dict[str, Any]:
    """The event's fields and every feature, read in one statement."""
    return derive(event, params, now, await read_features(session, event, params, now))


def _stats(count: int, total: float, sq: float) -> tuple[float, float]:
    if count == 0:
        return 0.0, 0.0
    mean = total / count
    return mean, math.sqrt(max(0.0, sq / count - mean * mean))


def _r(x: float) -> float:
    return round(x, 3)


def derive(event: Event, params: Params, now: datetime, raw: dict[str, Any]) -> dict[str, Any]:
    """The feature map (JSON-ready, rounded) from the query's raw row: pure."""
    f: dict[str, Any] = {
        "amount_msat": event.amount_msat, "asset": event.asset, "direction": event.direction,
        "rail": event.rail, "payout_rail": event.payout_rail or event.rail,
        "destination": event.destination,
        "counterparty": event.counterparty, "account": event.wallet_id,
        "kyc_tier": int(raw["tier"] or 0),
    }
    if event.senders:
        f["senders"] = list(event.senders)  # explained with the decision; not a rule field
    _windows(event, raw, f, "")
    d = event.direction
    n = f[f"agg.{d}.count.30d"]
    mean, sd = f[f"agg.{d}.mean.30d"], f[f"agg.{d}.stddev.30d"]
    z = 0.0
    if n >= params.zscore_min_history:
        # A flat history (sd 0) still has a scale: 1 % of its mean, at least 1 sat.
        z = (event.amount_msat - mean) / max(sd, mean / 100, 1000.0)
    f["amount_zscore"] = _r(z)
    f["history_count"] = n
    f["destination_sanctioned"] = bool(raw["sanctioned"])
    f["destination_labels"] = sorted(set((raw["labels"] or "").split(",")) - {""})
    f["destination_label_score"] = int(raw["label_score"] or 0)
    first_seen = raw["first_seen"]
    if isinstance(first_seen, str):  # SQLite's min() of a datetime column
        first_seen = datetime.fromisoformat(first_seen)
    if first_seen is not None and first_seen.tzinfo is None:
        from datetime import UTC
        first_seen = first_seen.replace(tzinfo=UTC)
    f["destination_age_known"] = first_seen is not None
    f["destination_age_days"] = 0 if first_seen is None \
        else max(0, (now - first_seen).days)
    f["destination_seen_count"] = int(raw["seen"] or 0)
    top = params.structuring_threshold_msat
    low = top - top * params.structuring_band_bp // 10_000
    f["structuring_count"] = int(raw["out.band"] or 0) + int(raw["in.band"] or 0) \
        + (1 if low <= event.amount_msat < top else 0)
    rapid_in = round(float(raw["in.rapid"] or 0.0))
    f["rapid_in_msat"] = rapid_in
    f["rapid_ratio_bp"] = 0 if d != "out" or event.amount_msat <= 0 \
        else min(rapid_in, event.amount_msat) * 10_000 // event.amount_msat
    _derive_person(event, raw, f, in_band=low <= event.amount_msat < top)
    return f


def _windows(event: Event, raw: dict[str, Any], f: dict[str, Any], prefix: str) -> None:
    """The four windows' aggregates of both directions and the event's velocities, from
    ``raw``'s columns named ``prefix`` + ``in.count.1h`` …: the wallet's (``""``) or the
    person's (``"person."``, which reads no money in's counterparties: 0, as the wallet's)."""
    for d in ("in", "out"):
        for name in WINDOWS:
            col = f"{prefix}{d}."
            n = int(raw[f"{col}count.{name}"] or 0)
            total = float(raw[f"{col}sum.{name}"] or 0.0)
            mean, sd = _stats(n, total, float(raw[f"{col}sq.{name}"] or 0.0))
            agg = f"{prefix}agg.{d}."
            f[f"{agg}count.{name}"] = n
            f[f"{agg}sum.{name}"] = round(total)
            f[f"{agg}mean.{name}"] = _r(mean)
            f[f"{agg}stddev.{name}"] = _r(sd)
            f[f"{agg}counterparties.{name}"] = int(raw.get(f"{col}counterparties.{name}") or 0)
    d = event.direction
    for name in WINDOWS:
        f[f"{prefix}velocity.count.{name}"] = f[f"{prefix}agg.{d}.count.{name}"] + 1
        f[f"{prefix}velocity.sum.{name}"] = f[f"{prefix}agg.{d}.sum.{name}"] \
            + event.amount_msat


def _derive_person(event: Event, raw: dict[str, Any], f: dict[str, Any], *,
                   in_band: bool) -> None:
    """The ``person.*`` features: the windows above over the person's wallets."""
    f["person.wallets"] = int(raw["person.wallets"] or 0)
    _windows(event, raw, f, "person.")
    f["person.structuring_count"] = int(raw["person.out.band"] or 0) \
        + int(raw["person.in.band"] or 0) + (1 if in_band else 0)
