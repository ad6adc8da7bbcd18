"""The periodic compliance report: volumes by rail, KYC counts by tier, alerts (review items),
the risk rules' alerts, cases, SARs and blocked amounts, large-transaction (CTR)
customer-days, for a period; as a dict, a CSV and a PDF.

Each section is read from the platform's own tables; a section whose records do not exist in
this installation is left out rather than shown as zero.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User
from satvault.kyc.service import tier_expr
from satvault.onchain.models import ReviewItem
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.rates.base import Rate
from satvault.reports.ctr import CtrRow, large_transactions, msat_to_minor
from satvault.reports.movements import day_bounds, movements
from satvault.risk.models import (
    CaseStatus,
    FrozenStatus,
    Money,
    RiskCase,
    RiskDecision,
    RiskFrozenDeposit,
    RiskSar,
)
from satvault.risk.rules import Outcome

__all__ = ["compliance_report", "ctr_csv", "report_csv", "report_pdf"]


def _money(minor: int, rate: Rate) -> str:
    return f"{Decimal(minor).scaleb(-rate.scale):,.{rate.scale}f} {rate.currency}"


async def compliance_report(session: AsyncSession, start: date, end: date, *, rate: Rate,
                            ctr_threshold_minor: int) -> dict[str, Any]:
    moves = await movements(session, start, end)
    volumes: dict[str, dict[str, int]] = defaultdict(lambda: {"in_count": 0, "in_msat": 0,
                                                             "out_count": 0, "out_msat": 0})
    for m in moves:
        v = volumes[m.rail]
        v[f"{m.direction}_count"] += 1
        v[f"{m.direction}_msat"] += m.amount_msat
    lo, hi = day_bounds(start, end)
    kyc = dict((await session.execute(select(User.kyc_tier, func.count()).group_by(
        User.kyc_tier).order_by(User.kyc_tier))).all())
    # A merchant's own (KYB) tier: its latest approved record's (no cache column, as users'
    # kyc_tier is), computed per merchant and counted.
    tiers = select(tier_expr("merchant", Merchant.__table__.c.id).label("tier")).select_from(
        Merchant).subquery()
    kyb: dict[int, int] = dict((await session.execute(select(tiers.c.tier, func.count()).group_by(
        tiers.c.tier).order_by(tiers.c.tier))).all())
    opened = Counter(dict((await session.execute(
        select(ReviewItem.kind, func.count()).where(ReviewItem.created_at >= lo,
                                                    ReviewItem.created_at < hi)
        .group_by(ReviewItem.kind))).all()))
    resolved = Counter(dict((await session.execute(
        select(ReviewItem.kind, func.count()).where(ReviewItem.resolved_at >= lo,
                                                    ReviewItem.resolved_at < hi)
        .group_by(ReviewItem.kind))).all()))
    ctr = large_transactions(moves, rate, ctr_threshold_minor)
    risk = await risk_section(session, lo, hi)
    for k in ("rejected_msat", "returned_msat", "held_msat", "released_msat", "kept_msat",
              "frozen_msat"):
        risk["blocked"][k.replace("_msat", "_minor")] = msat_to_minor(risk["blocked"][k], rate)
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rate": {"currency": rate.currency, "minor_per_btc": rate.minor_per_btc,
                 "source": rate.source, "at": rate.fetched_at.isoformat(timespec="seconds")},
        "volumes": {rail: {**v, "in_minor": msat_to_minor(v["in_msat"], rate),
                           "out_minor": msat_to_minor(v["out_msat"], rate)}
                    for rail, v in sorted(volumes.items())},
        "kyc_tiers": {str(t): int(n) for t, n in kyc.items()},
        "kyb_tiers": {str(t): int(n) for t, n in kyb.items()},
        "alerts": {k: {"opened": opened.get(k, 0), "resolved": resolved.get(k, 0)}
                   for k in sorted(set(opened) | set(resolved))},
        "risk": risk,
        "ctr": {"threshold_minor": ctr_threshold_minor,
                "customer_days": [ctr_dict(r) for r in ctr]},
    }


async def risk_section(session: AsyncSession, lo: datetime, hi: datetime) -> dict[str, Any]:
    """The rules engine in the period: alerts (review and reject decisions), cases opened and
    closed (by resolution), SARs drafted and filed, and the money it stopped: refused
    (reject decisions), returned and released by case decisions closed in the period, and
    still held (review decisions of the period whose withdrawal is still in ``review``)."""
    def n(q: Any) -> Any:
        return session.execute(q)

    in_period = (RiskDecision.at >= lo, RiskDecision.at < hi)
    alerts = dict((await n(select(RiskDecision.outcome, func.count()).where(
        *in_period, RiskDecision.outcome != Outcome.APPROVE).group_by(RiskDecision.outcome)
    )).all())
    opened = (await n(select(func.count()).select_from(RiskCase).where(
        RiskCase.created_at >= lo, RiskCase.created_at < hi))).scalar_one()
    closed = dict((await n(select(RiskCase.resolution, func.count()).where(
        RiskCase.status == CaseStatus.CLOSED, RiskCase.closed_at >= lo,
        RiskCase.closed_at < hi).group_by(RiskCase.resolution))).all())
    drafted = (await n(select(func.count()).select_from(RiskSar).where(
        RiskSar.created_at >= lo, RiskSar.created_at < hi))).scalar_one()
    filed = (await n(select(func.count()).select_from(RiskSar).where(
        RiskSar.filed_at >= lo, RiskSar.filed_at < hi))).scalar_one()
    # Refused is money out the rules stopped; a rejected deposit arrived all the same and is
    # counted once, as frozen (found from outside: it was counted as both).
    rejected = (await n(select(func.count(), func.coalesce(func.sum(
        RiskDecision.amount_msat), 0)).where(*in_period, RiskDecision.outcome == Outcome.REJECT,
                                             RiskDecision.subject_type != "deposit")
    )).one()
    by_money = {m: (int(c), int(a)) for m, c, a in (await n(select(
        RiskCase.money, func.count(), func.coalesce(func.sum(RiskDecision.amount_msat), 0))
        .join(RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
        RiskCase.closed_at >= lo, RiskCase.closed_at < hi).group_by(RiskCase.money))).all()}
    held = (await n(select(func.count(), func.coalesce(func.sum(Withdrawal.amount_msat), 0))
                    .join(RiskDecision, RiskDecision.subject_id == Withdrawal.id).where(
        *in_period, RiskDecision.outcome == Outcome.REVIEW,
        Withdrawal.status == WithdrawalStatus.REVIEW))).one()
    frozen = (await n(select(func.count(), func.coalesce(func.sum(
        RiskFrozenDeposit.amount_msat), 0)).where(
        RiskFrozenDeposit.created_at >= lo, RiskFrozenDeposit.created_at < hi,
        RiskFrozenDeposit.status == FrozenStatus.FROZEN))).one()
    returned = by_money.get(Money.RETURN, (0, 0))
    released = by_money.get(Money.RELEASE, (0, 0))
    kept = by_money.get(Money.KEEP, (0, 0))
    return {
        "alerts": {"review": int(alerts.get(Outcome.REVIEW, 0)),
                   "reject": int(alerts.get(Outcome.REJECT, 0))},
        "cases": {"opened": int(opened),
                  "closed_confirmed_risk": int(closed.get("confirmed_risk", 0)),
                  "closed_false_positive": int(closed.get("false_positive", 0))},
        "sars": {"drafted": int(drafted), "filed": int(filed)},
        "blocked": {"rejected_count": int(rejected[0]), "rejected_msat": int(rejected[1]),
                    "returned_count": returned[0], "returned_msat": returned[1],
                    "held_count": int(held[0]), "held_msat": int(held[1]),
                    "released_count": released[0], "released_msat": released[1],
                    "kept_count": kept[0], "kept_msat": kept[1],
                    "frozen_count": int(frozen[0]), "frozen_msat": int(frozen[1])},
    }


def ctr_dict(r: CtrRow) -> dict[str, Any]:
    return {"day": r.day.isoformat(), "owner_type": r.owner_type, "owner_id": r.owner_id,
            "in_msat": r.in_msat, "out_msat": r.out_msat, "in_minor": r.in_minor,
            "out_minor": r.out_minor, "over": r.reasons, "by_rail": r.by_rail,
            "wallets": sorted(r.wallets), "owners": sorted(r.owners),
            "movements": r.movements}


def ctr_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["day", "owner_type", "owner_id", "in_msat", "out_msat", "in_minor",
                "out_minor", "over", "rails", "wallets", "movements", "owners"])
    for r in rows:
        w.writerow([r["day"], r["owner_type"], r["owner_id"], r["in_msat"], r["out_msat"],
                    r["in_minor"], r["out_minor"], "+".join(r["over"]),
                    " ".join(f"{k}:{v.get('in', 0)}/{v.get('out', 0)}"
                             for k, v in r["by_rail"].items()),
                    " ".join(r["wallets"]), r["movements"], " ".join(r["owners"])])
    return buf.getvalue()


def report_csv(report: dict[str, Any]) -> str:
    """One CSV with a ``section`` column, so a spreadsheet can filter it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "key", "metric", "value"])
    p = report["period"]
    w.writerow(["period", "", "from", p["from"]])
    w.writerow(["period", "", "to", p["to"]])
    for k, v in report["rate"].items():
        w.writerow(["rate", "", k, v])
    for rail, v in report["volumes"].items():
        for metric, value in v.items():
            w.writerow(["volumes", rail, metric, value])
    for tier, n in report["kyc_tiers"].items():
        w.writerow(["kyc_tiers", tier, "accounts", n])
    for tier, n in report["kyb_tiers"].items():
        w.writerow(["kyb_tiers", tier, "merchants", n])
    for kind, v in report["alerts"].items():
        for metric, value in v.items():
            w.writerow(["alerts", kind, metric, value])
    for part in ("alerts", "cases", "sars", "blocked"):
        for metric, value in report["risk"][part].items():
            w.writerow(["risk", part, metric, value])
    for r in report["ctr"]["customer_days"]:
        w.writerow(["ctr", f"{r['day']} {r['owner_type']}:{r['owner_id']}",
                    "in_minor/out_minor", f"{r['in_minor']}/{r['out_minor']}"])
    return buf.getvalue()


def report_pdf(report: dict[str, Any], rate: Rate) -> bytes:
    """The same report as a PDF (fpdf2, built-in Helvetica: ASCII only by design)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime.fromisoformat(report["generated_at"]))  # same report, same bytes
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    p = report["period"]
    pdf.cell(0, 10, f"satvault compliance report {p['from']} to {p['to']}",
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    r = report["rate"]
    pdf.cell(0, 6, f"Generated {report['generated_at']}; 1 BTC = "
             f"{_money(r['minor_per_btc'], rate)} ({r['source']}, {r['at']})",
             new_x="LMARGIN", new_y="NEXT")

    def table(title: str, header: list[str], rows: list[list[str]]) -> None:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        if not rows:
            pdf.cell(0, 6, "none", new_x="LMARGIN", new_y="NEXT")
            return
        with pdf.table(col_widths=tuple([2] + [1] * (len(header) - 1))) as t:
            for line in [header, *rows]:
                row = t.row()
                for cell in line:
                    row.cell(str(cell))

    table("Volumes by rail", ["rail", "in", f"in ({rate.currency})", "out",
                              f"out ({rate.currency})"],
          [[rail, f"{v['in_count']} / {v['in_msat'] // 1000:,} sat",
            _money(v["in_minor"], rate), f"{v['out_count']} / {v['out_msat'] // 1000:,} sat",
            _money(v["out_minor"], rate)] for rail, v in report["volumes"].items()])
    table("Accounts by KYC tier", ["tier", "accounts"],
          [[t, n] for t, n in report["kyc_tiers"].items()])
    table("Merchants by KYB tier", ["tier", "merchants"],
          [[t, n] for t, n in report["kyb_tiers"].items()])
    table("Alerts (review items)", ["kind", "opened", "resolved"],
          [[k, v["opened"], v["resolved"]] for k, v in report["alerts"].items()])
    rk = report["risk"]
    table("Risk rules: alerts, cases, SARs", ["item", "count"], [
        ["alerts: review", rk["alerts"]["review"]], ["alerts: reject", rk["alerts"]["reject"]],
        ["cases opened", rk["cases"]["opened"]],
        ["cases closed: confirmed risk", rk["cases"]["closed_confirmed_risk"]],
        ["cases closed: false positive", rk["cases"]["closed_false_positive"]],
        ["SARs drafted", rk["sars"]["drafted"]], ["SARs filed", rk["sars"]["filed"]]])
    b = rk["blocked"]
    table("Blocked amounts", ["money", "count", "amount", f"({rate.currency})"], [
        [label, b[f"{k}_count"], f"{b[f'{k}_msat'] // 1000:,} sat", _money(b[f"{k}_minor"], rate)]
        for label, k in (("refused (reject decisions)", "rejected"),
                         ("returned by a case", "returned"), ("still held", "held"),
                         ("released by a case", "released"),
                         ("deposits kept frozen by a case", "kept"),
                         ("deposits frozen, undecided", "frozen"))])
    table(f"Large transactions (over {_money(report['ctr']['threshold_minor'], rate)} "
          "per customer per day)", ["day / customer", "in", "out", "over"],
          [[f"{c['day']} {c['owner_type']}:{c['owner_id']}", _money(c["in_minor"], rate),
            _money(c["out_minor"], rate), "+".join(c["over"])]
           for c in report["ctr"]["customer_days"]])
    return bytes(pdf.output())
