"""Operator-loaded address lists: the sanctions list and the label lists.

Files are CSV with a header ``address,label,score[,source][,first_seen]`` (lines starting
with ``#`` are comments), or, for sanctions, a plain text file of one address per line.
``first_seen`` (ISO date) is where an index the operator trusts says the address first
appeared on chain: the address-age rule reads it, and counts an address nobody dated as new.

Entries are stored in the one form the screening compares (:func:`canonical_address`): a
bech32/bech32m address, a node key (66 hex digits), a Lightning Address and an LNURL in lower
case, whatever case the file used, and a destination is looked up in that form too. All four
are case-insensitive (BIP173 allows an all-upper-case address, the QR-code form): an entry in
upper case named a destination nothing ever matched, and ``BOB@HOST`` paid a listed
``bob@host``. Base58 addresses are case-sensitive and kept as written. An entry written as a
BIP21 payment URI (``bitcoin:BC1Q…?amount=1``, copied from a payment request) is stored as
the address it names (it was stored as written and matched nothing); one that names no
address is refused.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.risk.audit import audit
from satvault.risk.models import RiskAddressLabel

__all__ = ["LABELS", "LabelRow", "canonical_address", "load_labels", "parse_list",
           "payment_uri_address", "refresh_sanctions", "shipped_sanctions"]

LABELS = ("sanctioned", "blacklist", "mixer", "darknet", "gambling", "scam", "exchange")
SANCTIONS_SCORE = 1000
_BECH32_HRPS = ("bc", "tb", "bcrt")
_HEX = frozenset("0123456789abcdef")
_LN_ADDRESS = re.compile(r"[a-z0-9._+-]+@[a-z0-9.-]+(:\d{1,5})?")  # LUD-16, a port too


def canonical_address(text: str) -> str:
    """The form a list entry and a screened party are compared in: a bech32/bech32m address
    (one case throughout, a known prefix), a 66-hex-digit node key, a Lightning Address
    (LUD-16 names are lower case, domains case-insensitive) or a bech32 LNURL lower-cased,
    the last two without a ``lightning:`` prefix; a BIP21 payment URI
    (``bitcoin:<address>?amount=…``) as the address it names, in that form; anything else
    (base58, ``wallet:<id>``) as written, less surrounding space."""
    text = text.strip()
    low = text.lower()
    if low.startswith("bitcoin:"):
        text = payment_uri_address(text)
        low = text.lower()
    if low.startswith("lightning:") and (
            low[10:].startswith("lnurl1") or _LN_ADDRESS.fullmatch(low[10:])):
        return low[10:]
    if len(low) == 66 and set(low) <= _HEX:
        return low
    if _LN_ADDRESS.fullmatch(low) or (low.startswith("lnurl1") and text in (low, text.upper())):
        return low
    if "1" in low and low.rsplit("1", 1)[0] in _BECH32_HRPS and text in (low, text.upper()):
        return low
    return text


def payment_uri_address(uri: str) -> str:
    """The address a BIP21 URI names (``bitcoin:`` any case, an optional ``//``, up to its
    ``?``), as written: an on-chain payment to it pays that address whatever the URI's
    parameters say. Empty when it names none."""
    rest = uri.strip()[len("bitcoin:"):]
    return rest.removeprefix("//").partition("?")[0].strip()


@dataclass(frozen=True, slots=True)
class LabelRow:
    address: str
    label: str
    score: int
    source: str
    first_seen_at: datetime | None


def shipped_sanctions() -> str:
    return resources.files("satvault.risk").joinpath("data/ofac_xbt.csv").read_text()


def parse_list(text: str, *, default_label: str | None = None,
               default_source: str = "") -> list[LabelRow]:
    """Rows of a list file; an :class:`InvalidInput` naming the line otherwise."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    rows: list[LabelRow] = []
    if "," not in lines[0]:  # one address per line
        if default_label is None:
            raise InvalidInput("a plain list of addresses is accepted only for sanctions")
        for number, ln in enumerate(lines, start=1):
            addr = canonical_address(ln)
            _check_address(addr, number, ln)
            rows.append(LabelRow(addr, default_label, SANCTIONS_SCORE, default_source, None))
        return rows
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None or "address" not in reader.fieldnames:
        raise InvalidInput("the CSV needs a header with at least an 'address' column")
    for n, rec in enumerate(reader, start=2):
        addr = canonical_address(rec.get("address") or "")
        _check_address(addr, n, rec.get("address") or "")
        label = (rec.get("label") or default_label or "").strip().lower()
        if label not in LABELS:
            raise InvalidInput(f"line {n}: label {label!r} is not one of {', '.join(LABELS)}")
        try:
            score = int((rec.get("score") or "").strip() or
                        (SANCTIONS_SCORE if label == "sanctioned" else 0))
        except ValueError:
            raise InvalidInput(f"line {n}: score {rec.get('score')!r} is not an integer"
                               ) from None
        if not -1000 <= score <= 1000:
            raise InvalidInput(f"line {n}: score {score} is outside -1000..1000")
        seen = (rec.get("first_seen") or "").strip()
        try:
            first = datetime.fromisoformat(seen).replace(tzinfo=UTC) if seen else None
        except ValueError:
            raise InvalidInput(f"line {n}: first_seen {seen!r} is not an ISO date") from None
        rows.append(LabelRow(addr, label, score,
                             (rec.get("source") or default_source).strip()[:120], first))
    return rows


def _check_address(addr: str, line: int, written: str) -> None:
    if written.strip().lower().startswith("bitcoin:") and not addr:
        raise InvalidInput(f"line {line}: {written.strip()!r} is a payment URI without an "
                           "address")
    if not addr or len(addr) > 200 or any(c.isspace() for c in addr):
        raise InvalidInput(f"line {line}: {addr!r} is not an address")


async def _replace(session: AsyncSession, rows: list[LabelRow], labels: set[str]) -> int:
    await session.execute(delete(RiskAddressLabel).where(RiskAddressLabel.label.in_(labels)))
    now = utcnow()
    unique = {(r.address, r.label): r for r in rows}
    if unique:
        await session.execute(insert(RiskAddressLabel), [
            {"address": r.address, "label": r.label, "score": r.score, "source": r.source,
             "first_seen_at": r.first_seen_at, "loaded_at": now} for r in unique.values()])
    return len(unique)


async def refresh_sanctions(session: AsyncSession, *, text: str, actor: str,
                            source: str = "ofac-sdn") -> int:
    """Replace the sanctions list with ``text`` (CSV or one address per line)."""
    rows = parse_list(text, default_label="sanctioned", default_source=source)
    if any(r.label != "sanctioned" for r in rows):
        raise InvalidInput("a sanctions file holds only 'sanctioned' rows")
    before = (await session.execute(select(func.count()).where(
        RiskAddressLabel.label == "sanctioned"))).scalar_one()
    n = await _replace(session, rows, {"sanctioned"})
    await audit(session, actor=actor, action="risk.sanctions.refresh", subject="sanctions",
                before={"addresses": int(before)}, after={"addresses": n, "source": source})
    return n


async def load_labels(session: AsyncSession, *, text: str, actor: str) -> dict[str, int]:
    """Replace each label list present in ``text`` (sanctions excepted: see
    :func:`refresh_sanctions`). Counts per label."""
    rows = parse_list(text)
    if any(r.label == "sanctioned" for r in rows):
        raise InvalidInput("sanctions are loaded with 'satvault risk sanctions refresh'")
    labels = {r.label for r in rows}
    if labels:
        await _replace(session, rows, labels)
    counts = {lab: sum(1 for r in rows if r.label == lab) for lab in sorted(labels)}
    await audit(session, actor=actor, action="risk.labels.load", subject="labels",
                after=counts)
    return counts
