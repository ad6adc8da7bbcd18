"""The critical alerts satvault sends by itself, without a Prometheus server in between.

Every tick the monitor reads the same :class:`~satvault.metrics.state.Snapshot` as a scrape
and decides five conditions (:func:`evaluate`, pure):

* ``reconciliation_difference`` — the reconciler raised a difference between the books, the
  coins and the node, and nobody resolved it;
* ``signer_refusal`` — the signer refused a signing request (its policy or its caps) within
  the last ``alert_signer_refusal_seconds``;
* ``hot_wallet_under_floor`` — the semi-cold (hot) wallet's ledger balance is under
  ``semicold_floor_sat``;
* ``watcher_stalled`` — the chain watcher is ``alert_watcher_lag_blocks`` or more behind the
  node's tip;
* ``node_out_of_sync`` — the chain or Lightning node did not answer, or the Lightning node
  says it is not synced to the chain.

A condition that cannot be decided this tick (no node in this process) keeps its last state.
Each channel (a webhook URL, the e-mail recipients) is told once when a condition starts and
once when it ends: the state and what each channel was last told are stored
(:class:`~satvault.metrics.models.AlertState`), so a restart neither repeats a notification
nor loses one, and a failed send is tried again at the next tick. Sends happen with no
transaction open.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from functools import partial
from typing import Any, Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.lightning import LightningBackend
from satvault.db import utcnow
from satvault.events.signing import SIGNATURE_HEADER, sign
from satvault.kernel.retrying import retrying
from satvault.logs import get_logger
from satvault.mail import SmtpRelay
from satvault.metrics.models import AlertState
from satvault.metrics.state import Snapshot, gather
from satvault.telemetry import SIGNER_REFUSALS

__all__ = ["ALERTS", "AlertMonitor", "Channel", "EmailChannel", "Finding", "Notice",
           "WebhookChannel", "evaluate"]

log = get_logger(__name__)
ALERTS = ("reconciliation_difference", "signer_refusal", "hot_wallet_under_floor",
          "watcher_stalled", "node_out_of_sync")


@dataclass(frozen=True, slots=True)
class Finding:
    firing: bool
    summary: str


@dataclass(frozen=True, slots=True)
class Notice:
    alert: str
    firing: bool
    summary: str
    since: datetime
    at: datetime

    def as_dict(self) -> dict[str, object]:
        return {"type": "alert.firing" if self.firing else "alert.resolved",
                "alert": self.alert, "severity": "critical", "summary": self.summary,
                "since": self.since.isoformat(), "at": self.at.isoformat()}


def evaluate(snap: Snapshot, *, floor_sat: int, lag_blocks: int,
             recent_refusals: int) -> dict[str, Finding]:
    """The conditions that can be decided from ``snap``."""
    out: dict[str, Finding] = {}
    n = snap.reconciliation_differences
    out["reconciliation_difference"] = Finding(
        n > 0, f"{n} reconciliation difference(s) open" if n
        else "no reconciliation difference open")
    out["signer_refusal"] = Finding(
        recent_refusals > 0, f"the signer refused {recent_refusals} signing request(s)"
        if recent_refusals else "no recent signer refusal")
    hot = snap.tiers.get("semicold", (0, 0))[0]
    out["hot_wallet_under_floor"] = Finding(
        hot < floor_sat, f"the hot wallet holds {hot} sat, its floor is {floor_sat} sat")
    if snap.watcher_lag is not None:
        out["watcher_stalled"] = Finding(
            snap.watcher_lag >= lag_blocks,
            f"the chain watcher is {snap.watcher_lag} block(s) behind the node's tip "
            f"{snap.chain_tip}")
    if snap.chain_up is not None or snap.lightning_up is not None:
        problems = []
        if snap.chain_up is False:
            problems.append("the chain node does not answer")
        if snap.lightning_up is False:
            problems.append("the Lightning node does not answer")
        elif snap.lightning_synced is False:
            problems.append("the Lightning node is not synced to the chain")
        out["node_out_of_sync"] = Finding(
            bool(problems), "; ".join(problems) or "the nodes answer and are synced")
    return out


# ----------------------------------------------------------------------------- channels

class Channel(Protocol):
    key: str

    async def send(self, notice: Notice) -> None:
        """Deliver or raise."""


class WebhookChannel:
    """A JSON POST, signed like merchant webhooks (``Satvault-Signature``) when a secret is
    set; any answer but 2xx is a failure, tried again at the next tick."""

    def __init__(self, url: str, secret: str | None, client: httpx.AsyncClient) -> None:
        self.url, self.secret, self.client = url, secret, client
        self.key = "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]

    async def send(self, notice: Notice) -> None:
        body = json.dumps(notice.as_dict(), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "satvault-alerts"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, int(notice.at.timestamp()), body)
        response = await self.client.post(self.url, content=body, headers=headers)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"the alert webhook answered {response.status_code}")


class PluginChannel:
    """A ``notifiers`` plug-in (:mod:`satvault.kernel.plugins`): ``notify`` gets the same JSON
    object a webhook does."""

    def __init__(self, name: str, notifier: Any) -> None:
        self.key = f"plugin:{name}"
        self.notifier = notifier

    async def send(self, notice: Notice) -> None:
        await self.notifier.notify(notice.as_dict())


class EmailChannel:
    """One message per notice through an SMTP relay (:class:`satvault.mail.SmtpRelay`)."""

    key = "email"

    def __init__(self, *, host: str, port: int, sender: str, recipients: Sequence[str],
                 starttls: bool = False, username: str = "", password: str = "",
                 timeout: float = 10.0) -> None:
        self.sender, self.recipients = sender, list(recipients)
        self.relay = SmtpRelay(host, port, starttls, username, password, timeout)

    def message(self, notice: Notice) -> EmailMessage:
        msg = EmailMessage()
        state = "FIRING" if notice.firing else "RESOLVED"
        msg["Subject"] = f"[satvault] {state}: {notice.alert}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(f"{notice.alert} is {'firing' if notice.firing else 'resolved'}.\n\n"
                        f"{notice.summary}\n\nsince {notice.since.isoformat()}\n"
                        f"at {notice.at.isoformat()}\n")
        return msg

    async def send(self, notice: Notice) -> None:
        await self.relay.send(self.message(notice))


# ----------------------------------------------------------------------------- the monitor

def _refusals_so_far() -> float:
    return sum(s.value for m in SIGNER_REFUSALS.collect() for s in m.samples
               if s.name.endswith("_total"))


class AlertMonitor:
    """One tick of the alerts worker: :meth:`step`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], channels: Sequence[Channel],
                 *, floor_sat: int, lag_blocks: int, refusal_seconds: float,
                 backend: ChainBackend | None = None,
                 lightning: LightningBackend | None = None) -> None:
        self.sessions = sessions
        self.channels = list(channels)
        self.floor_sat, self.lag_blocks = floor_sat, lag_blocks
        self.refusal_seconds = refusal_seconds
        self.backend, self.lightning = backend, lightning
        self._refusals_seen = _refusals_so_far()
        self._refusal_times: list[datetime] = []

    def _recent_refusals(self, now: datetime) -> int:
        total = _refusals_so_far()
        new = int(total - self._refusals_seen)
        self._refusals_seen = total
        self._refusal_times += [now] * max(0, new)
        self._refusal_times = [t for t in self._refusal_times
                               if (now - t).total_seconds() < self.refusal_seconds]
        return len(self._refusal_times)

    async def step(self) -> int:
        """Decide the conditions, store them, tell the channels what changed; returns the
        number of notifications sent."""
        snap = await gather(self.sessions, backend=self.backend, lightning=self.lightning)
        now = utcnow()
        findings = evaluate(snap, floor_sat=self.floor_sat, lag_blocks=self.lag_blocks,
                            recent_refusals=self._recent_refusals(now))
        due = await retrying(self.sessions, partial(self._record, findings=findings, now=now))
        sent: list[tuple[str, str, bool]] = []
        for notice, channel in due:
            try:
                await channel.send(notice)
            except Exception as exc:  # told again at the next tick
                log.warning("alert_not_sent", alert=notice.alert, channel=channel.key,
                            error=f"{type(exc).__name__}: {exc}")
                continue
            log.info("alert_sent", alert=notice.alert, firing=notice.firing,
                     channel=channel.key)
            sent.append((notice.alert, channel.key, notice.firing))
        if sent:
            await retrying(self.sessions, partial(self._mark, sent=sent))
        return len(sent)

    async def _record(self, session: AsyncSession, *, findings: dict[str, Finding],
                      now: datetime) -> list[tuple[Notice, Channel]]:
        rows = {r.name: r for r in (await session.execute(
            select(AlertState).with_for_update())).scalars()}
        for name, f in findings.items():
            row = rows.get(name)
            if row is None:
                row = AlertState(name=name, firing=False, summary=f.summary, since=now,
                                 notified="{}", updated_at=now)
                session.add(row)
                rows[name] = row
            if row.firing != f.firing:
                row.firing, row.since = f.firing, now
                (log.error if f.firing else log.info)(
                    "alert_changed", alert=name, firing=f.firing, summary=f.summary)
            row.summary, row.updated_at = f.summary, now
        due: list[tuple[Notice, Channel]] = []
        for row in rows.values():
            told = row.told()
            for ch in self.channels:
                if told.get(ch.key, False) != row.firing:
                    due.append((Notice(row.name, row.firing, row.summary, row.since, now), ch))
        return due

    async def _mark(self, session: AsyncSession, *, sent: list[tuple[str, str, bool]]) -> None:
        for name, key, firing in sent:
            row = await session.get(AlertState, name, with_for_update=True)
            if row is None:
                continue
            told = row.told()
            told[key] = firing
            row.notified = json.dumps(told, sort_keys=True)
