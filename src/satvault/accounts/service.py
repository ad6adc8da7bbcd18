"""Accounts service: create users, merchants, stores, wallets and API keys; authenticate.

Functions take the session first and keyword arguments after; none of them commits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import ApiKey, Merchant, Store, User, UserStatus, Wallet
from satvault.accounts.security import (
    hash_password_async,
    new_token,
    parse_token,
    secrets_match,
    verify_password_async,
)
from satvault.audit.service import record
from satvault.db import utcnow
from satvault.kernel.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from satvault.kernel.ids import new_id
from satvault.kernel.text import NOT_IN_ONE_LINE, one_line
from satvault.ledger.core import AccountKind
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_account
from satvault.rates.base import normalize_currency
from satvault.rates.errors import UnsupportedCurrency

__all__ = [
    "SCOPES",
    "Principal",
    "audit",
    "authenticate_api_key",
    "authenticate_password",
    "create_api_key",
    "create_merchant",
    "create_store",
    "create_user",
    "ensure_wallet",
    "get_merchant",
    "get_store",
    "get_user",
    "get_wallet",
    "list_stores",
    "merchant_api_keys",
    "normalize_email",
    "owner_type_of",
    "revoke_api_key",
    "update_store",
]

SCOPES = frozenset({
    "wallet:read", "wallet:write", "invoices:read", "invoices:write", "withdrawals:write",
    "stores:read", "stores:write", "webhooks:write", "admin",
})
# The scopes that move money out. An access token carries them only within a step-up
# (satvault.auth.tokens), and for it ``admin`` does not stand for them (found from outside:
# an admin's token issued without them withdrew from any customer's wallet all the same).
MONEY_SCOPES = frozenset({"withdrawals:write"})
# The local part printable ASCII (what a relay without SMTPUTF8 carries); the domain may be an
# IDN, but holds no control, format, separator or unassigned character (found from outside:
# "adm\u202enim@example.com", a right-to-left override, made a pending user).
_EMAIL = re.compile(r"^[!-?A-~]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")
_NOT_IN_A_DOMAIN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_PREFIX_OWNER = {"usr": "user", "mer": "merchant", "sto": "store"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the owner behind an API key and what the key may do."""

    key_id: str
    owner_type: str
    owner_id: str
    scopes: frozenset[str]
    merchant_id: str | None = None  # for store keys: the store's merchant
    # The person holding the credential when it names one: an access token's user, also
    # when it acts for a merchant (whose owner may be somebody else, or nobody).
    user_id: str | None = None
    # Whether ``admin`` stands for the money scopes too: an admin's API key, yes; an access
    # token, no (it names them when its grant proved a step-up, within the money window).
    admin_moves_money: bool = True

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        return self.is_admin and (scope not in MONEY_SCOPES or self.admin_moves_money)

    def owns(self, owner_type: str, owner_id: str) -> bool:
        if self.is_admin:
            return True
        return (self.owner_type, self.owner_id) == (owner_type, owner_id)


def owner_type_of(owner_id: str) -> str:
    prefix = owner_id.split("_", 1)[0]
    if prefix not in _PREFIX_OWNER:
        raise InvalidInput(f"owner {owner_id!r} is not a user (usr_…), merchant (mer_…) or "
                           "store (sto_…) id")
    return _PREFIX_OWNER[prefix]


async def audit(session: AsyncSession, *, actor: str, action: str, subject: str = "",
                details: dict[str, Any] | None = None) -> None:
    """The old spelling of :func:`satvault.audit.record` (``subject`` is the object,
    ``details`` the after-state), kept for callers not yet moved to it."""
    await record(session, actor=actor, action=action, object=subject, after=details or {})


async def ensure_wallet(session: AsyncSession, *, owner_type: str, owner_id: str,
                        asset: str = "BTC") -> Wallet:
    """The wallet of (owner, asset), created with its ledger account on first use."""
    found = (await session.execute(select(Wallet).where(
        Wallet.owner_type == owner_type, Wallet.owner_id == owner_id, Wallet.asset == asset
    ))).scalar_one_or_none()
    if found is not None:
        return found
    await ensure_platform_accounts(session, asset)
    kind = AccountKind.MERCHANT_WALLET if owner_type == "merchant" else AccountKind.CUSTOMER_WALLET
    account = await create_account(
        session, name=f"{owner_type}:{owner_id}:{asset}", asset=asset, kind=kind,
        owner_type=owner_type, owner_id=owner_id, debits_must_not_exceed_credits=True,
    )
    wallet = Wallet(id=new_id("wal"), owner_type=owner_type, owner_id=owner_id, asset=asset,
                    ledger_account_id=account.id, created_at=utcnow())
    session.add(wallet)
    await session.flush()
    return wallet


def _at_most(text: str, limit: int, what: str) -> str:
    """``text`` stripped, refused if longer than its column holds (found from outside: an
    over-long display name or key label was a traceback on PostgreSQL, silently kept on
    SQLite)."""
    text = one_line(text.strip(), what)
    if len(text) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters")
    return text


def normalize_email(email: str) -> str:
    """``email`` stripped and lower-cased, or :class:`InvalidInput` if it is not an address
    we take (whoever gives it: sign-up, the CLI, an admin)."""
    email = email.strip().lower()
    if (not _EMAIL.match(email) or NOT_IN_ONE_LINE.search(email)
            or any(unicodedata.category(c) in _NOT_IN_A_DOMAIN for c in email)):
        raise InvalidInput(f"{email!a} is not an e-mail address")
    return email


async def create_user(session: AsyncSession, *, email: str, password: str | None = None,
                      display_name: str = "", is_admin: bool = False,
                      status: UserStatus = UserStatus.ACTIVE, actor: str = "system") -> User:
    email = normalize_email(email)
    if password is not None and len(password) < 8:
        raise InvalidInput("a password needs at least 8 characters")
    display_name = _at_most(display_name, 120, "a display name")
    if (await session.execute(select(User.id).where(User.email == email))).first():
        raise AlreadyExists(f"a user with e-mail {email!r} exists")
    user = User(id=new_id("usr"), email=email, display_name=display_name,
                password_hash=await hash_password_async(password) if password else None,
                is_admin=is_admin, kyc_tier=0, status=status, created_at=utcnow())
    session.add(user)
    await session.flush()
    await ensure_wallet(session, owner_type="user", owner_id=user.id)
    await record(session, actor=actor, action="user.create", object=user.id,
                 after={"email": email, "is_admin": is_admin, "status": user.status.value})
    return user


async def create_merchant(session: AsyncSession, *, name: str, owner_user_id: str | None = None,
                          actor: str = "system") -> Merchant:
    name = one_line(name.strip(), "a merchant's name")
    if not name or len(name) > 120:
        raise InvalidInput("a merchant needs a name of 1-120 characters")
    if owner_user_id is not None:
        await get_user(session, owner_user_id)
    merchant = Merchant(id=new_id("mer"), name=name, owner_user_id=owner_user_id,
                        created_at=utcnow())
    session.add(merchant)
    await session.flush()
    await ensure_wallet(session, owner_type="merchant", owner_id=merchant.id)
    await record(session, actor=actor, action="merchant.create", object=merchant.id,
                 after={"name": merchant.name})
    return merchant


def _store_name(name: str) -> str:
    name = one_line(name.strip(), "a store's name")
    if not name or len(name) > 120:
        raise InvalidInput("a store needs a name of 1-120 characters")
    return name


def _store_currency(code: str) -> str:
    """BTC, SATS or an ISO 4217 code the rate sources can price."""
    norm = code.strip().upper()
    if norm in ("BTC", "SATS"):
        return norm
    try:
        return normalize_currency(norm)
    except UnsupportedCurrency as exc:
        raise InvalidInput(f"default_currency {code!r} is not BTC, SATS or a fiat code "
                           "satvault can price") from exc


def _speed_policy(value: int) -> int:
    if value not in (0, 1, 2, 6):
        raise InvalidInput("speed_policy (confirmations) must be 0, 1, 2 or 6")
    return value


def _spread(value: int) -> int:
    if not 0 <= value <= 2000:
        raise InvalidInput("spread_bp must be between 0 and 2000 (20 %)")
    return value


async def create_store(session: AsyncSession, *, merchant_id: str, name: str,
                       default_currency: str = "BTC", speed_policy: int = 1,
                       spread_bp: int = 0, actor: str = "system") -> Store:
    await get_merchant(session, merchant_id)
    store = Store(id=new_id("sto"), merchant_id=merchant_id, name=_store_name(name),
                  default_currency=_store_currency(default_currency),
                  speed_policy=_speed_policy(speed_policy), spread_bp=_spread(spread_bp),
                  created_at=utcnow())
    session.add(store)
    await session.flush()
    await record(session, actor=actor, action="store.create", object=store.id,
                 after={"merchant_id": merchant_id,
                        **{k: getattr(store, k) for k in STORE_SETTINGS}})
    return store


STORE_SETTINGS = ("name", "default_currency", "speed_policy", "spread_bp")


async def update_store(session: AsyncSession, store: Store, *, changes: dict[str, Any],
                       actor: str = "system") -> Store:
    """Change a store's settings (any of :data:`STORE_SETTINGS`); every change is audited
    with its old and new value. Invoices already created keep the rate and policy they
    were created with."""
    unknown = set(changes) - set(STORE_SETTINGS)
    if unknown:
        raise InvalidInput(f"unknown store setting(s) {sorted(unknown)}")
    checks: dict[str, Callable[[Any], Any]] = {
        "name": _store_name, "default_currency": _store_currency,
        "speed_policy": _speed_policy, "spread_bp": _spread}
    wanted = {k: checks[k](v) for k, v in changes.items()}
    diff = {k: [getattr(store, k), v] for k, v in wanted.items() if getattr(store, k) != v}
    for key, (_, value) in diff.items():
        setattr(store, key, value)
    if diff:
        await record(session, actor=actor, action="store.update", object=store.id,
                     before={k: old for k, (old, _) in diff.items()},
                     after={k: new for k, (_, new) in diff.items()})
    return store


async def list_stores(session: AsyncSession, *, merchant_id: str | None = None,
                      store_id: str | None = None) -> list[Store]:
    """Stores of one merchant, one store, or (neither given) every store; oldest first."""
    q = select(Store).order_by(Store.created_at, Store.id)
    if merchant_id is not None:
        q = q.where(Store.merchant_id == merchant_id)
    if store_id is not None:
        q = q.where(Store.id == store_id)
    return list((await session.execute(q)).scalars().all())


async def _get(session: AsyncSession, model: Any, ident: str, what: str) -> Any:
    found = await session.get(model, ident)
    if found is None:
        raise NotFound(f"{what} {ident!r} not found")
    return found


async def get_user(session: AsyncSession, user_id: str) -> User:
    user: User = await _get(session, User, user_id, "user")
    return user


async def get_merchant(session: AsyncSession, merchant_id: str) -> Merchant:
    merchant: Merchant = await _get(session, Merchant, merchant_id, "merchant")
    return merchant


async def get_store(session: AsyncSession, store_id: str) -> Store:
    store: Store = await _get(session, Store, store_id, "store")
    return store


async def get_wallet(session: AsyncSession, wallet_id: str) -> Wallet:
    wallet: Wallet = await _get(session, Wallet, wallet_id, "wallet")
    return wallet


async def create_api_key(session: AsyncSession, *, owner_id: str, scopes: list[str],
                         label: str = "", actor: str = "system") -> tuple[ApiKey, str]:
    """Create a key; returns (row, token). The token is not stored and cannot be shown again."""
    owner_type = owner_type_of(owner_id)
    wanted = {s.strip() for s in scopes if s.strip()}
    unknown = wanted - SCOPES
    if unknown:
        raise InvalidInput(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    if not wanted:
        raise InvalidInput("an API key needs at least one scope")
    label = _at_most(label, 120, "a key's label")
    owner = await _get(session, {"user": User, "merchant": Merchant, "store": Store}[owner_type],
                       owner_id, owner_type)
    if "admin" in wanted and not (owner_type == "user" and owner.is_admin):
        raise InvalidInput("only an admin user can hold the admin scope")
    key_id = new_id("key")
    token, secret_hash = new_token(key_id)
    key = ApiKey(id=key_id, owner_type=owner_type, owner_id=owner_id, label=label,
                 scopes=" ".join(sorted(wanted)), secret_hash=secret_hash, created_at=utcnow())
    session.add(key)
    await session.flush()
    await record(session, actor=actor, action="apikey.create", object=key_id,
                 after={"owner_id": owner_id, "scopes": sorted(wanted), "label": label})
    return key, token


async def merchant_api_keys(session: AsyncSession, merchant_id: str) -> list[ApiKey]:
    """The keys of a merchant and of its stores, newest first (revoked ones too)."""
    store_ids = select(Store.id).where(Store.merchant_id == merchant_id)
    return list((await session.execute(select(ApiKey).where(
        ((ApiKey.owner_type == "merchant") & (ApiKey.owner_id == merchant_id))
        | ((ApiKey.owner_type == "store") & ApiKey.owner_id.in_(store_ids))
    ).order_by(ApiKey.created_at.desc(), ApiKey.id.desc()))).scalars())


async def revoke_api_key(session: AsyncSession, *, key_id: str, actor: str = "system") -> None:
    """Revoke a key; a key revoked already is left as it is (found from outside: a second
    revocation moved ``revoked_at`` and wrote a second audit row)."""
    key: ApiKey = await _get(session, ApiKey, key_id, "API key")
    done = await session.execute(update(ApiKey).where(ApiKey.id == key_id,
                                                      ApiKey.revoked_at.is_(None))
                                 .values(revoked_at=utcnow()))
    if not done.rowcount:  # type: ignore[attr-defined]
        return
    await session.refresh(key, ["revoked_at"])
    await record(session, actor=actor, action="apikey.revoke", object=key_id,
                 before={"revoked_at": None}, after={"revoked_at": key.revoked_at})


async def authenticate_api_key(session: AsyncSession, token: str) -> Principal:
    parsed = parse_token(token)
    if parsed is None:
        raise Unauthenticated("malformed API key")
    key_id, secret = parsed
    key = await session.get(ApiKey, key_id)
    if key is None or not secrets_match(secret, key.secret_hash):
        raise Unauthenticated("unknown API key")
    if key.revoked_at is not None:
        raise Unauthenticated("this API key was revoked")
    # The key's merchant (of a store's or a merchant's key), and the status of the user
    # behind it (the key's owner, or the merchant's owner), in one statement: a suspended
    # user's keys are refused as their sign-ins and tokens are (found from outside: they
    # kept working).
    merchant_id: Any = None
    if key.owner_type == "store":
        merchant_id = select(Store.merchant_id).where(Store.id == key.owner_id) \
            .scalar_subquery()
    elif key.owner_type == "merchant":
        merchant_id = literal(key.owner_id)
    person = select(Merchant.owner_user_id).where(Merchant.id == merchant_id) \
        .scalar_subquery() if merchant_id is not None else literal(key.owner_id)
    found = (await session.execute(select(
        merchant_id if merchant_id is not None else literal(None, String()),
        select(User.status).where(User.id == person).scalar_subquery()))).one()
    merchant_id, status = found
    if key.owner_type == "store" and merchant_id is None:
        raise NotFound(f"store {key.owner_id!r} not found")
    if status is not None and status != UserStatus.ACTIVE:
        raise Unauthenticated(f"the owner of this API key is {UserStatus(status).value}")
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 300:
        # Coarse on purpose: a write per request would serialise reads on SQLite.
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    return Principal(key_id=key.id, owner_type=key.owner_type, owner_id=key.owner_id,
                     scopes=frozenset(key.scopes.split()), merchant_id=merchant_id)


async def authenticate_password(session: AsyncSession, *, email: str, password: str) -> User:
    user = (await session.execute(
        select(User).where(User.email == email.strip().lower())
    )).scalar_one_or_none()
    if (user is None or not user.password_hash
            or not await verify_password_async(password, user.password_hash)):
        raise Unauthenticated("wrong e-mail or password")
    if user.status != UserStatus.ACTIVE:  # told only to whoever knows the password
        raise Unauthenticated(f"this account is {user.status.value}")
    return user
