"""Suspicious-activity report (SAR) drafts, generated from a risk case.

One SAR per case: :func:`generate_sar` gathers who (the wallet's owner from the account and
KYC records), what (the decision, the rules that matched, the case's resolution), when, the
amounts (sat, and fiat when the caller has a rate at hand) and the wallet's other
transactions in a window around the decision, and fills a narrative template. The draft's
narrative can be rewritten (:func:`edit_narrative`: each version is kept as a case event);
:func:`file_sar` marks it filed with the regulator's reference, after which it does not
change. :func:`sar_pdf` renders it (fpdf2, as the compliance report). Every step is a case
event and an audit row.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, Store, User, Wallet
from satvault.accounts.persons import person_wallets
from satvault.db import utcnow
from satvault.kernel.errors import ConcurrentUpdate, InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.kyc.models import KycDecision, KycRecord
from satvault.ledger.models import LedgerTransfer
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.rates.base import Rate
from satvault.rates.convert import msat_to_fiat
from satvault.risk.cases import lock_case, record_event, refuse_subject
from satvault.risk.errors import CaseRefused
from satvault.risk.models import (
    CaseEventKind,
    RiskCase,
    RiskCaseEvent,
    RiskDecision,
    RiskSar,
    SarStatus,
)
from satvault.risk.rules import Outcome

__all__ = ["edit_narrative", "file_sar", "generate_sar", "get_sar", "sar_pdf"]

WINDOW_DAYS = 30


def _sat(msat: int) -> str:
    return f"{msat // 1000:,} sat" + (f" (+{msat % 1000} msat)" if msat % 1000 else "")


def _fiat(msat: int, rate: Rate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    from satvault.rates.base import currency_scale
    minor = msat_to_fiat(msat, rate)
    scale = currency_scale(rate.currency)
    return {"currency": rate.currency, "minor": minor,
            "text": f"{Decimal(minor).scaleb(-scale):,.{scale}f} {rate.currency}",
            "rate_minor_per_btc": rate.minor_per_btc, "rate_source": rate.source,
            "rate_at": rate.fetched_at.isoformat(timespec="seconds")}


async def _who(session: AsyncSession, wallet: Wallet) -> dict[str, Any]:
    who: dict[str, Any] = {"wallet_id": wallet.id, "owner_type": wallet.owner_type,
                           "owner_id": wallet.owner_id,
                           "wallet_frozen": wallet.frozen_at is not None}
    user_id: str | None = None
    if wallet.owner_type == "user":
        user_id = wallet.owner_id
    elif wallet.owner_type in ("merchant", "store"):
        q = select(Merchant) if wallet.owner_type == "merchant" else select(Merchant).join(
            Store, Store.merchant_id == Merchant.id)
        m = (await session.execute(q.where(
            (Merchant.id if wallet.owner_type == "merchant" else Store.id) == wallet.owner_id
        ))).scalar_one_or_none()
        if m is not None:
            who["merchant"] = {"id": m.id, "name": m.name}
            user_id = m.owner_user_id
    if user_id is not None:
        u = await session.get(User, user_id)
        if u is not None:
            who["user"] = {"id": u.id, "email": u.email, "display_name": u.display_name,
                           "kyc_tier": u.kyc_tier, "since": u.created_at.isoformat()}
    kyc = (await session.execute(select(KycRecord).where(
        KycRecord.owner_type == ("user" if user_id else wallet.owner_type),
        KycRecord.owner_id == (user_id or wallet.owner_id),
        KycRecord.decision == KycDecision.APPROVED).order_by(KycRecord.id.desc()).limit(1))
    ).scalar_one_or_none()
    who["kyc"] = None if kyc is None else {
        "full_name": kyc.full_name, "tier": kyc.tier, "documents": json.loads(kyc.documents),
        "reviewer": kyc.reviewer, "decided_at": kyc.decided_at.isoformat()}
    return who


# What left, or is on its way: counted in the narrative's sums. Cancelled and failed
# withdrawals are listed, and named apart.
_NOT_SENT = (WithdrawalStatus.CANCELLED, WithdrawalStatus.FAILED)


async def _transactions(session: AsyncSession, wallet: Wallet, d: RiskDecision
                        ) -> dict[str, Any]:
    """The month before the decision over the person's wallets (the wallets the limits and
    the ``person.*`` rules count together), the decision's own subject left out."""
    lo, hi = d.at - timedelta(days=WINDOW_DAYS), d.at
    wallets = (await session.execute(select(Wallet.id, Wallet.ledger_account_id).where(
        Wallet.id.in_(person_wallets(wallet.id))).order_by(Wallet.id))).all()
    by_account = {account: wid for wid, account in wallets}
    outs = (await session.execute(select(Withdrawal).where(
        Withdrawal.wallet_id.in_([wid for wid, _ in wallets]), Withdrawal.created_at >= lo,
        Withdrawal.created_at < hi, Withdrawal.id != d.subject_id)
        .order_by(Withdrawal.created_at, Withdrawal.id))).scalars().all()
    ins = (await session.execute(select(LedgerTransfer).where(
        LedgerTransfer.credit_account_id.in_(list(by_account)),
        LedgerTransfer.kind.in_(("single", "post")), LedgerTransfer.created_at >= lo,
        LedgerTransfer.created_at < hi).order_by(LedgerTransfer.seq))).scalars().all()
    return {
        "window": {"from": lo.isoformat(), "to": hi.isoformat()},
        "wallets": [wid for wid, _ in wallets],
        "out": [{"id": w.id, "wallet_id": w.wallet_id, "at": w.created_at.isoformat(),
                 "method": w.method.value, "destination": w.destination,
                 "amount_msat": int(w.amount_msat), "status": w.status.value}
                for w in outs],
        "in": [{"id": t.id, "wallet_id": by_account[t.credit_account_id],
                "at": t.created_at.isoformat(), "code": t.code,
                "amount_msat": int(t.amount)} for t in ins],
    }


_RAILS = {"onchain": "an on-chain", "lightning": "a Lightning", "internal": "an internal",
          "refund": "a refund"}


def _subject(d: RiskDecision, what: dict[str, Any], who: dict[str, Any], owner: str,
             amount: str) -> str:
    """The screened payment in words, in its direction: a deposit comes from its sender into
    the wallet (its destination is our own receiving address)."""
    rail = _RAILS.get(what["rail"] or "", "a")
    if what["direction"] == "in":
        source = what["counterparty"] or "an unknown sender"
        return (f"{rail} deposit of {amount} into wallet {who['wallet_id']}, held by "
                f"{owner}, from {source} (received at {what['destination'] or 'unknown'}) "
                f"was frozen by the risk rules"
                f"{' for review' if d.outcome != Outcome.REJECT else ''}")
    held = "refused" if d.outcome == Outcome.REJECT else "held for review"
    return (f"{rail} payment of {amount} from wallet {who['wallet_id']}, held by {owner}, "
            f"to {what['destination'] or 'an unknown destination'} was {held} by the risk "
            "rules")


def _narrative(c: RiskCase, d: RiskDecision, content: dict[str, Any]) -> str:
    what, who, tx = content["what"], content["who"], content["transactions"]
    owner = (who.get("kyc", None) and who["kyc"]["full_name"]) \
        or who.get("user", {}).get("email") or f"{who['owner_type']} {who['owner_id']}"
    fiat = content["amount"]["fiat"]
    amount = _sat(d.amount_msat) + (f" ({fiat['text']})" if fiat else "")
    rules = ", ".join(f"{r['id']} (+{r['score']})" for r in what["rules_matched"]) or "none"
    sent = [t for t in tx["out"] if t["status"] not in _NOT_SENT]
    unsent = len(tx["out"]) - len(sent)
    out_total = sum(t["amount_msat"] for t in sent)
    in_total = sum(t["amount_msat"] for t in tx["in"])
    text = (f"On {d.at:%Y-%m-%d %H:%M} UTC {_subject(d, what, who, owner, amount)} "
            f"(rule set version {what['rule_set_version']}, score {d.score}"
            f"{', sanctioned address' if d.sanctioned else ''}). Rules matched: {rules}. "
            f"Case {c.id} was opened on {c.created_at:%Y-%m-%d}")
    if c.resolution is not None:
        text += (f" and closed on {c.closed_at:%Y-%m-%d} as {c.resolution.value.replace('_', ' ')}"
                 f" (money: {c.money.value if c.money else 'none'})")
    n = len(tx["wallets"])
    whose = "the wallet" if n == 1 else f"the {n} wallets of the same owner"
    text += (f". In the {WINDOW_DAYS} days before it {whose} sent {len(sent)} "
             f"withdrawal(s) totalling {_sat(out_total)}"
             f"{f' ({unsent} more cancelled or failed)' if unsent else ''} and received "
             f"{len(tx['in'])} credit(s) totalling {_sat(in_total)}.")
    return " ".join(text.split())


async def generate_sar(session: AsyncSession, *, case_id: str, actor: str,
                       rate: Rate | None = None) -> dict[str, Any]:
    """The case's SAR draft, generated once (a second call returns the one there is)."""
    c = await lock_case(session, case_id, open_only=False)
    await refuse_subject(session, c.wallet_id, actor, "drafts its SAR")
    existing = (await session.execute(select(RiskSar).where(RiskSar.case_id == case_id))
                ).scalar_one_or_none()
    if existing is not None:
        return sar_dict(existing)
    d = await session.get(RiskDecision, c.decision_id)
    wallet = await session.get(Wallet, c.wallet_id)
    if d is None or wallet is None:
        raise NotFound(f"the decision or wallet of case {case_id} is gone")
    features = json.loads(d.features)
    notes = (await session.execute(select(RiskCaseEvent).where(
        RiskCaseEvent.case_id == case_id, RiskCaseEvent.kind.in_(
            (CaseEventKind.NOTE, CaseEventKind.ATTACHMENT))).order_by(RiskCaseEvent.id))
             ).scalars().all()
    content: dict[str, Any] = {
        "who": await _who(session, wallet),
        "what": {
            "decision_id": d.id, "outcome": d.outcome.value, "score": d.score,
            "sanctioned": d.sanctioned, "rule_set_version": d.rule_set_version,
            "rules_matched": [{"id": r["id"], "score": r.get("score", 0)}
                              for r in json.loads(d.results) if r.get("matched")],
            "subject": {"type": d.subject_type, "id": d.subject_id},
            "rail": features.get("rail"), "direction": features.get("direction"),
            "destination": features.get("destination"),
            "counterparty": features.get("counterparty"),
            "case_reason": c.reason,
            "resolution": c.resolution.value if c.resolution else None,
            "money": c.money.value if c.money else None},
        "when": {"decided_at": d.at.isoformat(), "case_opened_at": c.created_at.isoformat(),
                 "case_closed_at": c.closed_at.isoformat() if c.closed_at else None},
        "amount": {"msat": int(d.amount_msat), "sat": int(d.amount_msat) // 1000,
                   "fiat": _fiat(int(d.amount_msat), rate)},
        "transactions": await _transactions(session, wallet, d),
        "case_notes": [{"at": e.at.isoformat(), "actor": e.actor, "kind": e.kind.value,
                        "text": e.text, "uri": e.uri, "sha256": e.sha256} for e in notes],
    }
    now = utcnow()
    sar = RiskSar(id=new_id("sar"), case_id=case_id, status=SarStatus.DRAFT,
                  content=json.dumps(content, sort_keys=True),
                  narrative=_narrative(c, d, content), created_by=actor[:80], created_at=now,
                  updated_at=now)
    session.add(sar)
    try:
        await session.flush()
    except IntegrityError as exc:  # another request drafted it first
        raise ConcurrentUpdate(f"a SAR of case {case_id} is being drafted; read it") from exc
    await record_event(session, c, actor=actor, kind=CaseEventKind.SAR,
                       text="SAR drafted", data={"sar_id": sar.id, "status": "draft"})
    return sar_dict(sar)


async def _sar_of(session: AsyncSession, case_id: str) -> tuple[RiskCase, RiskSar]:
    c = await lock_case(session, case_id, open_only=False)
    sar = (await session.execute(select(RiskSar).where(RiskSar.case_id == case_id)
                                 .with_for_update())).scalar_one_or_none()
    if sar is None:
        raise NotFound(f"case {case_id} has no SAR: generate one first")
    return c, sar


async def get_sar(session: AsyncSession, case_id: str) -> dict[str, Any]:
    sar = (await session.execute(select(RiskSar).where(RiskSar.case_id == case_id))
           ).scalar_one_or_none()
    if sar is None:
        raise NotFound(f"case {case_id} has no SAR: generate one first")
    return sar_dict(sar)


async def edit_narrative(session: AsyncSession, *, case_id: str, narrative: str,
                         actor: str) -> dict[str, Any]:
    """Rewrite the draft's narrative; the new text is kept as a case event too."""
    narrative = narrative.strip()
    if not narrative or len(narrative) > 20_000:
        raise InvalidInput("a narrative is 1 to 20,000 characters")
    c, sar = await _sar_of(session, case_id)
    await refuse_subject(session, c.wallet_id, actor, "writes its SAR")
    if sar.status != SarStatus.DRAFT:
        raise CaseRefused(f"the SAR of case {case_id} is filed ({sar.filed_reference}): it "
                          "does not change")
    sar.narrative, sar.updated_at = narrative, utcnow()
    await session.flush()
    await record_event(session, c, actor=actor, kind=CaseEventKind.SAR, text=narrative,
                       data={"sar_id": sar.id, "narrative": "edited"})
    return sar_dict(sar)


async def file_sar(session: AsyncSession, *, case_id: str, reference: str,
                   actor: str) -> dict[str, Any]:
    """``draft`` → ``filed`` with the reference the authority gave; the same reference again
    is a retry (no change), another one is refused."""
    reference = reference.strip()
    if not reference or len(reference) > 120:
        raise InvalidInput("a filing reference is 1 to 120 characters")
    c, sar = await _sar_of(session, case_id)
    await refuse_subject(session, c.wallet_id, actor, "files its SAR")
    if sar.status == SarStatus.FILED:
        if sar.filed_reference == reference:
            return sar_dict(sar)
        raise CaseRefused(f"the SAR of case {case_id} is filed already as "
                          f"{sar.filed_reference}")
    now = utcnow()
    sar.status, sar.filed_reference, sar.filed_by, sar.filed_at, sar.updated_at = \
        SarStatus.FILED, reference, actor[:80], now, now
    await session.flush()
    await record_event(session, c, actor=actor, kind=CaseEventKind.SAR, text="SAR filed",
                       data={"sar_id": sar.id, "status": "filed", "reference": reference})
    return sar_dict(sar)


def sar_dict(sar: RiskSar) -> dict[str, Any]:
    return {"id": sar.id, "case_id": sar.case_id, "status": sar.status.value,
            "narrative": sar.narrative, "created_by": sar.created_by,
            "created_at": sar.created_at.isoformat(), "updated_at": sar.updated_at.isoformat(),
            "filed_reference": sar.filed_reference, "filed_by": sar.filed_by,
            "filed_at": sar.filed_at.isoformat() if sar.filed_at else None,
            **json.loads(sar.content)}


def _ascii(text: Any) -> str:
    """Helvetica in fpdf2 is Latin-1: anything else is replaced, never an error."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def sar_pdf(sar: dict[str, Any]) -> bytes:
    """The SAR as a PDF (fpdf2, built-in Helvetica)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    # Dated when the SAR last changed, not when it is rendered: one SAR is one document,
    # the same bytes at every download (the file ID is a hash over the content and date).
    pdf.set_creation_date(datetime.fromisoformat(sar["updated_at"]))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 10, _ascii(f"Suspicious activity report {sar['id']} ({sar['status']})"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    filed = f"; filed {sar['filed_at']} as {sar['filed_reference']}" \
        if sar["status"] == "filed" else ""
    pdf.cell(0, 6, _ascii(f"Case {sar['case_id']}; drafted {sar['created_at']} by "
                          f"{sar['created_by']}{filed}"), new_x="LMARGIN", new_y="NEXT")

    def section(title: str, rows: list[tuple[str, Any]]) -> None:
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        with pdf.table(col_widths=(1, 3)) as t:
            for k, v in rows:
                row = t.row()
                row.cell(_ascii(k))
                row.cell(_ascii("" if v is None else v))

    who, what, when, amount = sar["who"], sar["what"], sar["when"], sar["amount"]
    kyc, user = who.get("kyc") or {}, who.get("user") or {}
    section("Who", [("wallet", who["wallet_id"]),
                    ("owner", f"{who['owner_type']}:{who['owner_id']}"),
                    ("name (KYC)", kyc.get("full_name")), ("e-mail", user.get("email")),
                    ("KYC tier", kyc.get("tier", user.get("kyc_tier"))),
                    ("merchant", (who.get("merchant") or {}).get("name"))])
    section("What", [("decision", f"{what['outcome']} (score {what['score']}, rule set "
                                  f"{what['rule_set_version']})"),
                     ("rules matched", ", ".join(r["id"] for r in what["rules_matched"])),
                     ("sanctioned", "yes" if what["sanctioned"] else "no"),
                     ("rail / destination", f"{what['rail']} / {what['destination']}"),
                     ("resolution", what["resolution"]), ("money", what["money"])])
    fiat = amount.get("fiat")
    section("When and how much", [
        ("decided", when["decided_at"]), ("case opened", when["case_opened_at"]),
        ("case closed", when["case_closed_at"]),
        ("amount", f"{amount['sat']:,} sat" + (f" ({fiat['text']})" if fiat else ""))])
    tx = sar["transactions"]
    section("Related transactions", [
        *((f"out {t['at'][:16]}", f"{t['amount_msat'] // 1000:,} sat {t['method']} "
                                  f"{t['status']} to {t['destination'][:60]}")
          for t in tx["out"]),
        *((f"in {t['at'][:16]}", f"{t['amount_msat'] // 1000:,} sat ({t['code']})")
          for t in tx["in"])] or [("none", "")])
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, "Narrative", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 5, _ascii(sar["narrative"]))
    return bytes(pdf.output())
