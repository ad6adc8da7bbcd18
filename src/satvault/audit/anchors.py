"""On-chain anchors of the audit chain: a head (seq, hash) committed in a sweep.

:func:`satvault.audit.service.anchor` with ``onchain=True`` (``satvault audit anchor
--onchain``, ``POST /api/v1/admin/audit/anchors``) stores a ``requested`` anchor. The sweep
planner (:mod:`satvault.custody.sweeps`) asks :func:`for_sweep` which anchor the sweep it is
building should carry, adds the zero-value ``OP_RETURN`` of :mod:`satvault.signing.anchor`
and :func:`attach`-es the anchor to the batch in the same transaction (``planned``). The
payout job, in the transaction that books the confirmed sweep, calls :func:`confirm` (txid,
block height; an ``audit.anchor_confirmed`` row is chained too), or :func:`release` when it
abandons the sweep, so the next sweep carries the anchor instead.

The rule for automatic anchors (setting ``audit_anchor_in_sweeps``): a sweep with no
requested anchor commits the latest *sealed* head, unless no row was sealed since the last
anchor a sweep carried. Requested anchors go on chain whatever the setting: asking is the
operator's explicit consent. One anchor per sweep: when several were requested before a
sweep, the newest is carried and the older ones are ``superseded`` (the newer head vouches
for every row the older did).

These rows are bookkeeping; the proof is the transaction: ``satvault audit verify-anchor``
reads the seq and hash back from the chain and needs nothing from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.chain import moment
from satvault.audit.models import AnchorStatus, AuditAnchor
from satvault.audit.service import SEALER, head, record
from satvault.db import utcnow
from satvault.logs import get_logger

__all__ = ["ANCHOR_CONFIRMED", "AUTO_ACTOR", "AnchorChoice", "anchor_dict", "attach",
           "by_txid", "confirm", "for_sweep", "list_anchors", "release"]

log = get_logger(__name__)
ANCHOR_CONFIRMED = "audit.anchor_confirmed"
AUTO_ACTOR = "sweep"


def anchor_dict(a: AuditAnchor) -> dict[str, Any]:
    def when(at: datetime | None) -> str | None:
        return moment(at) if at else None
    return {"id": a.id, "seq": a.seq, "hash": a.hash, "status": a.status.value,
            "requested_by": a.requested_by, "requested_at": when(a.requested_at),
            "batch_id": a.batch_id, "txid": a.txid, "block_height": a.block_height,
            "confirmed_at": when(a.confirmed_at)}


@dataclass(frozen=True, slots=True)
class AnchorChoice:
    """What a sweep being planned will carry: a head, and the requested rows it fulfils (the
    newest is carried, the others superseded); none for an automatic anchor."""

    seq: int
    hash: str
    requested: tuple[int, ...] = ()


async def for_sweep(session: AsyncSession, *, auto: bool) -> AnchorChoice | None:
    """The anchor the sweep being planned should carry: the newest requested one; else, when
    ``auto``, the latest sealed head if it moved past the last anchor a sweep carried; else
    None. Reads only: :func:`attach` writes, once the sweep is stored."""
    requested = (await session.execute(
        select(AuditAnchor).where(AuditAnchor.status == AnchorStatus.REQUESTED)
        .order_by(AuditAnchor.seq.desc(), AuditAnchor.id.desc()))).scalars().all()
    if requested:
        return AnchorChoice(requested[0].seq, requested[0].hash,
                            tuple(a.id for a in requested))
    if not auto:
        return None
    top = await head(session)
    if top is None:
        return None
    last = (await session.execute(select(func.max(AuditAnchor.seq)).where(
        AuditAnchor.status.in_((AnchorStatus.PLANNED, AnchorStatus.CONFIRMED))))).scalar()
    if last is not None and top.seq <= int(last):
        return None
    return AnchorChoice(top.seq, top.hash)


async def attach(session: AsyncSession, choice: AnchorChoice, *, batch_id: str) -> None:
    """The sweep ``batch_id`` carries ``choice`` (same transaction as the stored batch)."""
    if not choice.requested:
        session.add(AuditAnchor(seq=choice.seq, hash=choice.hash,
                                status=AnchorStatus.PLANNED, requested_by=AUTO_ACTOR,
                                requested_at=utcnow(), batch_id=batch_id))
    for k, anchor_id in enumerate(choice.requested):
        a = await session.get(AuditAnchor, anchor_id)
        assert a is not None
        if k == 0:
            a.status, a.batch_id = AnchorStatus.PLANNED, batch_id
        else:
            a.status = AnchorStatus.SUPERSEDED
    await session.flush()


async def confirm(session: AsyncSession, *, batch_id: str, txid: str, height: int) -> int:
    """The sweep ``batch_id`` confirmed as ``txid`` in block ``height``: its anchor (if it
    carried one) is ``confirmed`` and an ``audit.anchor_confirmed`` row says so. Returns how
    many anchors it confirmed (0 or 1)."""
    anchors = (await session.execute(select(AuditAnchor).where(
        AuditAnchor.batch_id == batch_id, AuditAnchor.status == AnchorStatus.PLANNED))
    ).scalars().all()
    now = utcnow()
    for a in anchors:
        a.status, a.txid, a.block_height, a.confirmed_at = \
            AnchorStatus.CONFIRMED, txid, height, now
        await record(session, actor=SEALER, action=ANCHOR_CONFIRMED,
                     object=f"audit_events.seq={a.seq}",
                     after={"seq": a.seq, "hash": a.hash, "txid": txid,
                            "block_height": height, "batch_id": batch_id})
        log.info("audit_anchor_confirmed", seq=a.seq, txid=txid, block_height=height)
    return len(anchors)


async def release(session: AsyncSession, *, batch_id: str) -> None:
    """The sweep ``batch_id`` was given up: its anchor waits for the next sweep again."""
    anchors = (await session.execute(select(AuditAnchor).where(
        AuditAnchor.batch_id == batch_id, AuditAnchor.status == AnchorStatus.PLANNED))
    ).scalars().all()
    for a in anchors:
        a.status, a.batch_id = AnchorStatus.REQUESTED, None
        log.warning("audit_anchor_released", seq=a.seq, batch=batch_id)


async def list_anchors(session: AsyncSession, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = (await session.execute(select(AuditAnchor).order_by(AuditAnchor.id.desc())
                                  .limit(limit))).scalars().all()
    return [anchor_dict(a) for a in rows]


async def by_txid(session: AsyncSession, txid: str) -> AuditAnchor | None:
    return (await session.execute(select(AuditAnchor).where(AuditAnchor.txid == txid)
                                  .order_by(AuditAnchor.id.desc()).limit(1))
            ).scalar_one_or_none()
