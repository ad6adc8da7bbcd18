"""``satvault kyc …``, ``satvault wallet freeze|unfreeze`` and ``satvault risk screening …``:
KYC records and their history, wallet freezes, and the PEP/sanctions name lists.

Every command prints one JSON object; a refusal prints ``{"ok": false, "error": …}`` and
exits 1 (2 when the database schema is not current).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.service import owner_type_of
from satvault.cli._common import admin_user
from satvault.cli._common import emit as _emit
from satvault.cli._common import fail as _fail
from satvault.cli._common import in_transaction as _run
from satvault.config import get_settings
from satvault.kernel.errors import SatvaultError
from satvault.kyc import service as kyc
from satvault.kyc.models import ScreeningList
from satvault.kyc.screening import load_list, parse_csv, screen_name

__all__ = ["kyc_app", "risk_app", "wallet_app"]

T = TypeVar("T")

kyc_app = typer.Typer(help="KYC (users) and KYB (merchants) records and tiers.",
                      no_args_is_help=True)
wallet_app = typer.Typer(help="Wallets: freeze and unfreeze.", no_args_is_help=True)
risk_app = typer.Typer(help="Risk and compliance.", no_args_is_help=True)
screening_app = typer.Typer(help="PEP and sanctions name lists.", no_args_is_help=True)
risk_app.add_typer(screening_app, name="screening")







def _owner(owner_id: str) -> str:
    try:
        kind = owner_type_of(owner_id)
    except SatvaultError as exc:
        _fail(str(exc))
        raise
    if kind not in kyc.OWNER_TYPES:
        _fail("KYC records are kept for users (usr_…) and merchants (mer_…)")
    return kind


@kyc_app.command("record")
def record(
    owner: Annotated[str, typer.Argument(help="The subject: a user (usr_…) or merchant "
                                              "(mer_…) id.")],
    tier: Annotated[int, typer.Option(min=0, help="The tier reviewed for.")],
    decision: Annotated[str, typer.Option(help="approve or reject.")],
    name: Annotated[str, typer.Option(help="The full legal name checked (screened).")],
    reviewer: Annotated[str, typer.Option(help="The admin who reviewed (e-mail or id; not "
                                               "the subject).")],
    document: Annotated[list[str] | None, typer.Option(
        help="A document reference (repeatable).")] = None,
    check: Annotated[list[str] | None, typer.Option(
        help="A check done (repeatable), e.g. id-document, liveness, address.")] = None,
    notes: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Record a KYC/KYB review; an approval sets the owner's tier unless screening hits."""
    kind = _owner(owner)
    settings = get_settings()

    async def work(session: AsyncSession) -> dict[str, Any]:
        # A real admin, by id as the API names the caller (found from outside: free text
        # here, so an e-mail address never matched the subject and approved one's own tier).
        who = (await admin_user(session, reviewer)).id
        r = await kyc.create_record(session, kyc.RecordRequest(
            owner_type=kind, owner_id=owner, tier=tier, decision=decision, full_name=name,
            documents=document or [], checks=check or [], reviewer=who, notes=notes),
            max_tier=max(settings.kyc_tier_limits_msat),
            screening_threshold=settings.kyc_screening_threshold)
        return {"ok": r.decision.value != "blocked", **kyc.record_dict(r)}

    out = _run(work)
    _emit(out)
    if not out["ok"]:
        raise typer.Exit(1)


@kyc_app.command("history")
def history(owner: Annotated[str, typer.Argument(help="A user or merchant id.")]) -> None:
    """Every KYC record of an owner, oldest first, and the tier they give."""
    kind = _owner(owner)

    async def work(session: AsyncSession) -> dict[str, Any]:
        records = await kyc.history(session, kind, owner)
        return {"owner_type": kind, "owner_id": owner,
                "kyc_tier": await kyc.tier_of(session, kind, owner),
                "records": [kyc.record_dict(r) for r in records]}

    _emit(_run(work))


@wallet_app.command("freeze")
def freeze(wallet: Annotated[str, typer.Argument(help="Wallet id (wal_…).")],
           reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
           actor: Annotated[str, typer.Option(
               "--actor", "--as", help="The admin who freezes it (e-mail or id); without it "
                                       "the audit log says `cli`.")] = "cli") -> None:
    """Freeze a wallet: nothing leaves it on any rail until it is unfrozen."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        who = actor if actor == "cli" else (await admin_user(session, actor)).id
        w = await kyc.freeze(session, wallet_id=wallet, reason=reason, actor=who)
        return {"ok": True, "id": w.id, "frozen": True, "reason": w.frozen_reason}

    _emit(_run(work))


@wallet_app.command("unfreeze")
def unfreeze(wallet: Annotated[str, typer.Argument(help="Wallet id (wal_…).")],
             reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
             actor: Annotated[str, typer.Option(
                 "--actor", "--as", help="The admin who unfreezes it (e-mail or id), not "
                                         "its owner.")]) -> None:
    """Unfreeze a wallet: by an admin other than its owner, as through the API (found from
    outside: free text here, so the owner unfroze their own wallet under any name)."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        who = (await admin_user(session, actor)).id
        w = await kyc.unfreeze(session, wallet_id=wallet, reason=reason, actor=who)
        return {"ok": True, "id": w.id, "frozen": False}

    _emit(_run(work))


@screening_app.command("load")
def load(which: Annotated[ScreeningList, typer.Option("--list", help="pep or sanctions.")],
         file: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                            help="CSV with a name column (and reference).")]
         ) -> None:
    """Replace a name list with the names in FILE."""
    try:
        entries = parse_csv(file.read_text(encoding="utf-8-sig"))
    except SatvaultError as exc:
        _fail(str(exc))
        raise

    async def work(session: AsyncSession) -> dict[str, Any]:
        return {"ok": True, "list": which.value, "loaded": await load_list(session, which,
                                                                          entries)}

    _emit(_run(work))


@screening_app.command("check")
def check_name(name: Annotated[str, typer.Argument(help="The name to screen.")]) -> None:
    """Screen a name against the loaded lists now."""
    threshold = get_settings().kyc_screening_threshold

    async def work(session: AsyncSession) -> dict[str, Any]:
        hits = await screen_name(session, name, threshold=threshold)
        return {"ok": not hits, "name": name, "hits": [h.as_dict() for h in hits]}

    _emit(_run(work))
