"""The pure ledger core: accounts, transfers and the rules that move money between them.

Modelled on TigerBeetle's data model. An *account* has four stored balances, all integers in
the asset's smallest unit and never negative::

    debits_posted   credits_posted   debits_pending   credits_pending

A *transfer* moves ``amount`` from its debit account to its credit account. It is immutable
and its ``id`` is the caller's idempotency key. Two-phase transfers first reserve (``PENDING``:
the pending columns grow), then resolve exactly once: ``POST`` (all or part moves to the posted
columns, the rest is released), ``VOID`` or ``EXPIRE`` (all released).

Flags guard balances: ``debits_must_not_exceed_credits`` (a customer wallet can't go below
zero: ``debits_posted + debits_pending <= credits_posted``) and the mirror image for accounts
such as the outside world. ``available = credits_posted - debits_posted - debits_pending``.

:func:`plan_transfers` takes the current state as values and returns what to write as values;
no session, clock or settings in here. The store (``store.py``) locks rows, calls it and
persists the plan; the database's CHECK constraints enforce the same rules a second time.

A batch may link transfers (``linked=True`` chains a transfer to the next one): a chain
commits all or nothing. Balance-dependent failures (``exceeds_credits``/``exceeds_debits``) are
remembered, so retrying that id fails the same way instead of succeeding later by surprise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "ID_MAX_LEN",
    "RECORDED_FAILURES",
    "Account",
    "AccountKind",
    "Balances",
    "FailedTransfer",
    "HoldState",
    "Outcome",
    "Plan",
    "Result",
    "Transfer",
    "TransferKind",
    "TransferSpec",
    "available",
    "plan_transfers",
]

ID_MAX_LEN = 128


class AccountKind(StrEnum):
    CUSTOMER_WALLET = "customer_wallet"
    MERCHANT_WALLET = "merchant_wallet"
    HOT_WALLET = "hot_wallet"
    COLD_WALLET = "cold_wallet"
    FEES = "fees"
    CLEARING = "clearing"
    EXTERNAL = "external"
    EQUITY = "equity"


class TransferKind(StrEnum):
    SINGLE = "single"
    PENDING = "pending"
    POST = "post"
    VOID = "void"
    EXPIRE = "expire"


RESOLVING = frozenset({TransferKind.POST, TransferKind.VOID, TransferKind.EXPIRE})


class HoldState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


_STATE_AFTER = {
    TransferKind.POST: HoldState.POSTED,
    TransferKind.VOID: HoldState.VOIDED,
    TransferKind.EXPIRE: HoldState.EXPIRED,
}


class Result(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    ID_MUST_NOT_BE_EMPTY = "id_must_not_be_empty"
    ID_TOO_LONG = "id_too_long"
    ID_ALREADY_FAILED = "id_already_failed"
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = "exists_with_different_debit_account_id"
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = "exists_with_different_credit_account_id"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_ASSET = "exists_with_different_asset"
    EXISTS_WITH_DIFFERENT_KIND = "exists_with_different_kind"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_TIMEOUT = "exists_with_different_timeout"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS_WITH_DIFFERENT_REF = "exists_with_different_ref"
    EXISTS_WITH_DIFFERENT_LINKED = "exists_with_different_linked"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    DEBIT_ACCOUNT_ID_REQUIRED = "debit_account_id_required"
    CREDIT_ACCOUNT_ID_REQUIRED = "credit_account_id_required"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    ASSET_REQUIRED = "asset_required"
    ASSET_MISMATCH = "asset_mismatch"
    AMOUNT_REQUIRED = "amount_required"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    TIMEOUT_MUST_NOT_BE_NEGATIVE = "timeout_must_not_be_negative"
    PENDING_ID_MUST_BE_BLANK = "pending_id_must_be_blank"
    PENDING_ID_REQUIRED = "pending_id_required"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = (
        "pending_transfer_has_different_debit_account_id"
    )
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = (
        "pending_transfer_has_different_credit_account_id"
    )
    PENDING_TRANSFER_HAS_DIFFERENT_ASSET = "pending_transfer_has_different_asset"
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = "pending_transfer_has_different_amount"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    PENDING_TRANSFER_NOT_EXPIRED = "pending_transfer_not_expired"
    OVERFLOWS_BALANCE = "overflows_balance"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"


# Failures that depend on balances at the time: remembered so a retry cannot succeed later.
RECORDED_FAILURES = frozenset({Result.EXCEEDS_CREDITS, Result.EXCEEDS_DEBITS})

_ALREADY = {
    HoldState.POSTED: Result.PENDING_TRANSFER_ALREADY_POSTED,
    HoldState.VOIDED: Result.PENDING_TRANSFER_ALREADY_VOIDED,
    HoldState.EXPIRED: Result.PENDING_TRANSFER_EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Balances:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def __add__(self, other: Balances) -> Balances:
        return Balances(
            self.debits_posted + other.debits_posted,
            self.credits_posted + other.credits_posted,
            self.debits_pending + other.debits_pending,
            self.credits_pending + other.credits_pending,
        )

    def __sub__(self, other: Balances) -> Balances:
        return Balances(
            self.debits_posted - other.debits_posted,
            self.credits_posted - other.credits_posted,
            self.debits_pending - other.debits_pending,
            self.credits_pending - other.credits_pending,
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    asset: str
    kind: AccountKind
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    balances: Balances = field(default_factory=Balances)


def available(account: Account) -> int:
    """What a wallet can spend: credits posted minus debits posted and held."""
    b = account.balances
    return b.credits_posted - b.debits_posted - b.debits_pending


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """What a caller asks for. For POST/VOID the accounts, asset and amount may be left None
    and are taken from the pending transfer (a POST with amount None posts the full amount)."""

    id: str
    debit_account_id: int | None = None
    credit_account_id: int | None = None
    amount: int | None = None
    asset: str | None = None
    kind: TransferKind = TransferKind.SINGLE
    pending_id: str | None = None
    timeout_seconds: int = 0
    linked: bool = False
    code: str = ""
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Transfer:
    """A stored transfer; ``debit_after``/``credit_after`` snapshot both accounts afterwards."""

    id: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    asset: str
    kind: TransferKind
    created_at: datetime
    pending_id: str | None = None
    timeout_seconds: int = 0
    expires_at: datetime | None = None
    state: HoldState | None = None
    linked: bool = False
    code: str = ""
    ref: str = ""
    debit_after: Balances = field(default_factory=Balances)
    credit_after: Balances = field(default_factory=Balances)
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class FailedTransfer:
    id: str
    result: Result


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    id: str
    result: Result
    transfer: Transfer | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result in (Result.CREATED, Result.EXISTS)


@dataclass(frozen=True, slots=True)
class Plan:
    outcomes: tuple[Outcome, ...]
    inserts: tuple[Transfer, ...]
    deltas: Mapping[int, Balances]
    hold_updates: Mapping[str, HoldState]
    failures: tuple[FailedTransfer, ...]


_COMPARED = (
    ("debit_account_id", Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
    ("credit_account_id", Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
    ("amount", Result.EXISTS_WITH_DIFFERENT_AMOUNT),
    ("asset", Result.EXISTS_WITH_DIFFERENT_ASSET),
    ("kind", Result.EXISTS_WITH_DIFFERENT_KIND),
    ("pending_id", Result.EXISTS_WITH_DIFFERENT_PENDING_ID),
    ("timeout_seconds", Result.EXISTS_WITH_DIFFERENT_TIMEOUT),
    ("code", Result.EXISTS_WITH_DIFFERENT_CODE),
    ("ref", Result.EXISTS_WITH_DIFFERENT_REF),
    ("linked", Result.EXISTS_WITH_DIFFERENT_LINKED),
)


def _compare_existing(spec: TransferSpec, stored: Transfer) -> Result:
    """Same id: the original if every field the caller gave matches, else name the field."""
    for name, result in _COMPARED:
        given = getattr(spec, name)
        if given is None and name in ("debit_account_id", "credit_account_id", "amount", "asset"):
            continue  # derived from the pending transfer on POST/VOID
        if given != getattr(stored, name):
            return result
    return Result.EXISTS


@dataclass(slots=True)
class _State:
    """Scratch state while planning; copied per linked chain so a failed chain leaves no mark."""

    accounts: dict[int, Account]
    transfers: dict[str, Transfer]
    new: list[Transfer]
    holds: dict[str, HoldState]

    def fork(self) -> _State:
        return _State(dict(self.accounts), dict(self.transfers), list(self.new), dict(self.holds))


def _limits(account: Account, max_amount: int) -> Result | None:
    b = account.balances
    if max(b.as_tuple()) > max_amount:
        return Result.OVERFLOWS_BALANCE
    if account.debits_must_not_exceed_credits and (
        b.debits_posted + b.debits_pending > b.credits_posted
    ):
        return Result.EXCEEDS_CREDITS
    if account.credits_must_not_exceed_debits and (
        b.credits_posted + b.credits_pending > b.debits_posted
    ):
        return Result.EXCEEDS_DEBITS
    return None


def _move(state: _State, debit_id: int, credit_id: int, d_debit: Balances, d_credit: Balances,
          max_amount: int) -> tuple[Result | None, Balances, Balances]:
    debit = state.accounts[debit_id]
    credit = state.accounts[credit_id]
    new_debit = replace(debit, balances=debit.balances + d_debit)
    new_credit = replace(credit, balances=credit.balances + d_credit)
    problem = _limits(new_debit, max_amount) or _limits(new_credit, max_amount)
    if problem is not None:
        return problem, debit.balances, credit.balances
    state.accounts[debit_id] = new_debit
    state.accounts[credit_id] = new_credit
    return None, new_debit.balances, new_credit.balances


def _check_amount(amount: int | None, max_amount: int) -> Result | None:
    if amount is None:
        return Result.AMOUNT_REQUIRED
    if amount <= 0:
        return Result.AMOUNT_MUST_BE_POSITIVE
    if amount > max_amount:
        return Result.AMOUNT_OUT_OF_RANGE
    return None


def _apply_new(state: _State, spec: TransferSpec, now: datetime, max_amount: int
               ) -> tuple[Result, Transfer | None]:
    if spec.pending_id is not None:
        return Result.PENDING_ID_MUST_BE_BLANK, None
    if spec.timeout_seconds < 0:
        return Result.TIMEOUT_MUST_NOT_BE_NEGATIVE, None
    if spec.timeout_seconds and spec.kind is not TransferKind.PENDING:
        return Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER, None
    if spec.debit_account_id is None:
        return Result.DEBIT_ACCOUNT_ID_REQUIRED, None
    if spec.credit_account_id is None:
        return Result.CREDIT_ACCOUNT_ID_REQUIRED, None
    if spec.debit_account_id == spec.credit_account_id:
        return Result.ACCOUNTS_MUST_BE_DIFFERENT, None
    bad_amount = _check_amount(spec.amount, max_amount)
    if bad_amount is not None:
        return bad_amount, None
    if spec.asset is None:
        return Result.ASSET_REQUIRED, None
    debit = state.accounts.get(spec.debit_account_id)
    if debit is None:
        return Result.DEBIT_ACCOUNT_NOT_FOUND, None
    credit = state.accounts.get(spec.credit_account_id)
    if credit is None:
        return Result.CREDIT_ACCOUNT_NOT_FOUND, None
    if not (debit.asset == credit.asset == spec.asset):
        return Result.ASSET_MISMATCH, None
    amount = spec.amount
    assert amount is not None
    if spec.kind is TransferKind.PENDING:
        d_debit, d_credit = Balances(debits_pending=amount), Balances(credits_pending=amount)
    else:
        d_debit, d_credit = Balances(debits_posted=amount), Balances(credits_posted=amount)
    problem, debit_after, credit_after = _move(
        state, spec.debit_account_id, spec.credit_account_id, d_debit, d_credit, max_amount
    )
    if problem is not None:
        return problem, None
    is_pending = spec.kind is TransferKind.PENDING
    transfer = Transfer(
        id=spec.id,
        debit_account_id=spec.debit_account_id,
        credit_account_id=spec.credit_account_id,
        amount=amount,
        asset=spec.asset,
        kind=spec.kind,
        created_at=now,
        timeout_seconds=spec.timeout_seconds,
        expires_at=now + timedelta(seconds=spec.timeout_seconds) if spec.timeout_seconds else None,
        state=HoldState.PENDING if is_pending else None,
        linked=spec.linked,
        code=spec.code,
        ref=spec.ref,
        debit_after=debit_after,
        credit_after=credit_after,
    )
    return Result.CREATED, transfer


def _apply_resolve(state: _State, spec: TransferSpec, now: datetime, max_amount: int
                   ) -> tuple[Result, Transfer | None]:
    if spec.pending_id is None:
        return Result.PENDING_ID_REQUIRED, None
    if spec.timeout_seconds:
        return Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER, None
    pending = state.transfers.get(spec.pending_id)
    if pending is None:
        return Result.PENDING_TRANSFER_NOT_FOUND, None
    if pending.kind is not TransferKind.PENDING:
        return Result.PENDING_TRANSFER_NOT_PENDING, None
    hold = state.holds.get(pending.id, pending.state)
    if hold is not HoldState.PENDING:
        assert hold is not None
        return _ALREADY[hold], None
    if spec.debit_account_id not in (None, pending.debit_account_id):
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID, None
    if spec.credit_account_id not in (None, pending.credit_account_id):
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID, None
    if spec.asset not in (None, pending.asset):
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_ASSET, None
    due = pending.expires_at is not None and now >= pending.expires_at
    if spec.kind is TransferKind.EXPIRE:
        if not due:
            return Result.PENDING_TRANSFER_NOT_EXPIRED, None
    elif due:
        return Result.PENDING_TRANSFER_EXPIRED, None
    held = pending.amount
    if spec.kind is TransferKind.POST:
        amount = held if spec.amount is None else spec.amount
        bad = _check_amount(amount, max_amount)
        if bad is not None:
            return bad, None
        if amount > held:
            return Result.EXCEEDS_PENDING_TRANSFER_AMOUNT, None
        d_debit = Balances(debits_posted=amount, debits_pending=-held)
        d_credit = Balances(credits_posted=amount, credits_pending=-held)
    else:
        if spec.amount not in (None, held):
            return Result.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT, None
        amount = held
        d_debit = Balances(debits_pending=-held)
        d_credit = Balances(credits_pending=-held)
    if pending.debit_account_id not in state.accounts:
        return Result.DEBIT_ACCOUNT_NOT_FOUND, None
    if pending.credit_account_id not in state.accounts:
        return Result.CREDIT_ACCOUNT_NOT_FOUND, None
    problem, debit_after, credit_after = _move(
        state, pending.debit_account_id, pending.credit_account_id, d_debit, d_credit, max_amount
    )
    if problem is not None:
        return problem, None
    state.holds[pending.id] = _STATE_AFTER[spec.kind]
    transfer = Transfer(
        id=spec.id,
        debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id,
        amount=amount,
        asset=pending.asset,
        kind=spec.kind,
        created_at=now,
        pending_id=pending.id,
        linked=spec.linked,
        code=spec.code,
        ref=spec.ref,
        debit_after=debit_after,
        credit_after=credit_after,
    )
    return Result.CREATED, transfer


def _apply_one(state: _State, spec: TransferSpec, failed: Mapping[str, FailedTransfer],
               now: datetime, max_amount: int) -> tuple[Result, Transfer | None, str]:
    if not spec.id:
        return Result.ID_MUST_NOT_BE_EMPTY, None, ""
    if len(spec.id) > ID_MAX_LEN:
        return Result.ID_TOO_LONG, None, ""
    earlier = failed.get(spec.id)
    if earlier is not None:
        return Result.ID_ALREADY_FAILED, None, f"failed earlier with {earlier.result.value}"
    stored = state.transfers.get(spec.id)
    if stored is not None:
        return _compare_existing(spec, stored), stored, ""
    if spec.kind in RESOLVING:
        result, transfer = _apply_resolve(state, spec, now, max_amount)
    else:
        result, transfer = _apply_new(state, spec, now, max_amount)
    if transfer is not None:
        state.transfers[transfer.id] = transfer
        state.new.append(transfer)
    return result, transfer, ""


def _chains(specs: Sequence[TransferSpec]) -> list[range]:
    chains, start = [], 0
    for i, spec in enumerate(specs):
        if not spec.linked:
            chains.append(range(start, i + 1))
            start = i + 1
    if start < len(specs):
        chains.append(range(start, len(specs)))
    return chains


def plan_transfers(
    specs: Sequence[TransferSpec],
    *,
    accounts: Mapping[int, Account],
    existing: Mapping[str, Transfer],
    failed: Mapping[str, FailedTransfer],
    now: datetime,
    max_amount: int,
) -> Plan:
    """Decide every transfer of a batch against the given state and return what to write.

    ``accounts`` must hold every account the batch touches (including those of pending
    transfers it resolves), ``existing`` every stored transfer whose id the batch uses or
    resolves, ``failed`` the remembered failures among the batch's ids.
    """
    state = _State(dict(accounts), dict(existing), [], {})
    remembered = dict(failed)
    outcomes: list[Outcome | None] = [None] * len(specs)
    failures: list[FailedTransfer] = []
    for chain in _chains(specs):
        open_chain = specs[chain[-1]].linked
        # A lone transfer changes the state only when it succeeds, so it needs no scratch
        # copy; only a linked chain must be tried on a fork and dropped if any link fails.
        trial = state if len(chain) == 1 and not open_chain else state.fork()
        results: list[tuple[Result, Transfer | None, str]] = []
        broken: int | None = None
        for i in chain:
            result, transfer, detail = _apply_one(trial, specs[i], remembered, now, max_amount)
            results.append((result, transfer, detail))
            if result not in (Result.CREATED, Result.EXISTS):
                broken = i
                break
        if broken is None and not open_chain:
            state = trial
            for i, (result, transfer, detail) in zip(chain, results, strict=True):
                outcomes[i] = Outcome(i, specs[i].id, result, transfer, detail)
            continue
        for i in chain:
            if i == broken:
                result, _, detail = results[i - chain[0]]
                outcomes[i] = Outcome(i, specs[i].id, result, None, detail)
                if result in RECORDED_FAILURES:
                    remembered[specs[i].id] = FailedTransfer(specs[i].id, result)
                    failures.append(remembered[specs[i].id])
            elif open_chain and broken is None:
                outcomes[i] = Outcome(i, specs[i].id, Result.LINKED_EVENT_CHAIN_OPEN)
            else:
                outcomes[i] = Outcome(i, specs[i].id, Result.LINKED_EVENT_FAILED)
    deltas: dict[int, Balances] = {}
    for account_id, account in state.accounts.items():
        before = accounts.get(account_id)
        if before is not None and account.balances != before.balances:
            deltas[account_id] = account.balances - before.balances
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(specs)
    return Plan(
        outcomes=tuple(done),
        inserts=tuple(state.new),
        deltas=deltas,
        hold_updates=dict(state.holds),
        failures=tuple(failures),
    )
