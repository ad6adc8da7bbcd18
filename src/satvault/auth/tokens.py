"""JWT access tokens and refresh-token families for the API (``POST /api/v1/auth/token``).

Access tokens are HS256 JWTs (``pyjwt``), ten minutes by default, with ``kid`` in the header
naming the signing key in ``auth_signing_keys``. HS256 because the only party that verifies
them is satvault itself, holding the same key store: an asymmetric algorithm (EdDSA) would
only pay off if third parties verified our tokens from a published JWKS, and it would keep a
private key in the same database anyway. Claims: ``sub`` (user), ``fam`` (token family),
``scope`` (space-separated, like an API key's), ``mer`` (the merchant it acts for, if any),
``iat``, ``exp``, ``jti``, ``iss``.

Keys rotate with :func:`rotate_keys` (``satvault auth rotate-keys``): the current key is
retired (signs nothing more) and verifies until the last token it signed has expired; past
that it is deleted, and a token naming it is refused like a forged one. Keys are sealed at
rest (:mod:`.sealing`) when ``SATVAULT_SECRET_KEY`` is set.

Every grant is held to the same second-factor rule as the pages (:func:`issue`): no token
while the user must still enroll TOTP (an admin, or a user an admin marked), and none for an
account with TOTP unless the grant passed it (the code in the password grant, a web session
that passed it for the session grant). The one exception is :func:`issue_enrollment`: a
family with no scope that cannot be refreshed, for an account that must enroll TOTP and
logged in with one factor where there is no dashboard to enroll in (LNURL-auth).

A token is refused (401) when it is malformed, its key is unknown or gone, its signature or
``exp`` (read from satvault's clock, not pyjwt's) is wrong, its family is revoked (refresh
reuse, sign-out, password reset), the web session it came from is revoked or expired, or its
user is no longer active. That costs a database read per request: JWTs are not put in the
API-key cache, so a revocation takes effect on the next request.

Refresh tokens are opaque 256-bit secrets (stored as SHA-256), 30 days, each spent by one
use and replaced by the next of its family; a spent one presented again means it was copied,
and revokes the whole family (the thief's and the owner's tokens alike).

Scopes: an admin may hold every scope, anyone else every scope but ``admin``; requested scopes
are narrowed to those (an unknown scope is an error), none requested means all allowed. The
money scopes (:data:`MONEY_SCOPES`) come only to a grant that proved a step-up, the same
fresh factor the dashboard asks before a withdrawal (:mod:`.stepup`): otherwise a hijacked
session or a phished password would move money through the API that it cannot move through
the dashboard. Asked for by name without one, they are refused (403 ``step-up-required``).
They hold for ``money_scope_minutes`` (15 by default) after the family was issued: past that
its access tokens act without them and its refreshes no longer carry them, so a stolen
refresh token (30 days) does not move money for 30 days; a new step-up grant wins them again.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User, UserStatus
from satvault.accounts.service import MONEY_SCOPES, SCOPES, Principal
from satvault.audit.service import record
from satvault.auth import totp
from satvault.auth.credentials import AuthPolicy, digest, random_token
from satvault.auth.models import Credentials, RefreshToken, SigningKey, TokenFamily
from satvault.auth.sealing import Sealer
from satvault.auth.sessions import IDLE_TIMEOUT, WebSession
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import InvalidInput, NotFound, StepUpRequired, Unauthenticated
from satvault.kernel.ids import is_id, new_id

__all__ = ["ALG", "ISSUER", "MONEY_SCOPES", "TokenPair", "allowed_scopes", "authenticate_jwt",
           "family_of", "issue", "issue_enrollment", "looks_like_jwt", "refresh", "revoke_family",
           "rotate_keys", "signed_in_at", "signing_key"]

ALG = "HS256"
ISSUER = "satvault"
_REFRESH_PREFIX = "svr."
_PURPOSE = "jwt signing key"
# The shapes of the ids this module makes, checked before a client's copy is looked up.
_KID = ("kid", 16)
_REFRESH_ID = ("rtk", 20)
# Scopes that move money out (withdrawals, refunds, LNURL-withdraw vouchers).


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    scopes: tuple[str, ...]
    family_id: str


def looks_like_jwt(token: str) -> bool:
    """A JWT by shape (three base64url parts, a JSON header), as opposed to an API key
    (``sv.key_….secret``)."""
    return token.startswith("eyJ") and token.count(".") == 2


def _new_key(sealer: Sealer, now: datetime) -> SigningKey:
    kid = new_id(*_KID)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return SigningKey(kid=kid, alg=ALG, secret=sealer.seal(secret, purpose=_PURPOSE, row=kid),
                      created_at=now)


def _key_bytes(key: SigningKey, sealer: Sealer) -> bytes:
    secret = sealer.open(key.secret, purpose=_PURPOSE, row=key.kid)
    return base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))


async def signing_key(session: AsyncSession, *, sealer: Sealer) -> SigningKey:
    """The key that signs now (the newest not retired), made on first use."""
    key = (await session.execute(
        select(SigningKey).where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc()).limit(1))).scalar_one_or_none()
    if key is None:
        key = _new_key(sealer, utcnow())
        session.add(key)
        await session.flush()
    return key


async def rotate_keys(session: AsyncSession, *, actor: str,
                      policy: AuthPolicy = AuthPolicy()) -> SigningKey:
    """A new signing key; the old ones retire and verify until their tokens have expired;
    keys past that are deleted."""
    now = utcnow()
    life = timedelta(seconds=policy.access_token_seconds)
    retired = list((await session.execute(
        select(SigningKey.kid).where(SigningKey.retired_at.is_(None)))).scalars())
    if retired:
        await session.execute(update(SigningKey).where(SigningKey.kid.in_(retired))
                              .values(retired_at=now, verify_until=now + life))
    dropped = list((await session.execute(
        select(SigningKey.kid).where(SigningKey.verify_until <= now))).scalars())
    if dropped:
        await session.execute(delete(SigningKey).where(SigningKey.kid.in_(dropped)))
    key = _new_key(policy.sealer, now)
    session.add(key)
    await session.flush()
    await record(session, actor=actor, action="auth.keys_rotated", object=key.kid,
                 after={"retired": retired, "deleted": dropped})
    return key


def allowed_scopes(user: User, requested: list[str] | None, *,
                   stepped_up: bool = False) -> tuple[str, ...]:
    """The scopes a token of ``user`` gets for ``requested`` (none: all it may hold); the
    money scopes only when the grant proved a step-up."""
    allowed = set(SCOPES) if user.is_admin else set(SCOPES) - {"admin"}
    if not stepped_up:
        allowed -= MONEY_SCOPES
    if not requested:
        return tuple(sorted(allowed))
    wanted = {s.strip() for s in requested if s.strip()}
    unknown = wanted - SCOPES
    if unknown:
        raise InvalidInput(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    if wanted & MONEY_SCOPES and not stepped_up:
        raise StepUpRequired(f"{', '.join(sorted(wanted & MONEY_SCOPES))} needs a step-up: "
                             "the payment password or a TOTP code with the password grant, "
                             "or a session that stepped up in the last minutes")
    narrowed = wanted & allowed
    if not narrowed:
        raise InvalidInput("none of the requested scopes is allowed to this user")
    return tuple(sorted(narrowed))


async def _acting_merchant(session: AsyncSession, user: User,
                           merchant_id: str | None) -> tuple[str | None, bool]:
    """The merchant a token acts for, and whether the user owns it (an admin may act for
    any merchant, to see what it sees, and moves none of its money: see
    :func:`_acts_for`)."""
    if merchant_id is None:
        return None, False
    owns = await _acts_for(session, user, merchant_id)
    if owns is None:
        raise NotFound(f"merchant {merchant_id!r} not found")
    return merchant_id, owns


def _refresh_token(refresh_id: str) -> tuple[str, str]:
    secret = random_token()
    return f"{_REFRESH_PREFIX}{refresh_id}.{secret}", digest(secret)


async def _pair(session: AsyncSession, family: TokenFamily, policy: AuthPolicy) -> TokenPair:
    now = utcnow()
    refresh_id = new_id(*_REFRESH_ID)
    token, token_hash = _refresh_token(refresh_id)
    session.add(RefreshToken(id=refresh_id, family_id=family.id, token_hash=token_hash,
                             created_at=now,
                             expires_at=now + timedelta(days=policy.refresh_token_days)))
    key = await signing_key(session, sealer=policy.sealer)
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": family.user_id, "fam": family.id, "scope": family.scopes,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + policy.access_token_seconds,
        "jti": new_id("jti", 16)}
    if family.merchant_id:
        claims["mer"] = family.merchant_id
    access = jwt.encode(claims, _key_bytes(key, policy.sealer), algorithm=ALG,
                        headers={"kid": key.kid, "typ": "JWT"})
    await session.flush()
    return TokenPair(access_token=access, expires_in=policy.access_token_seconds,
                     refresh_token=token, scopes=tuple(family.scopes.split()),
                     family_id=family.id)


async def _refuse_without_second_factor(session: AsyncSession, user: User,
                                        second_factor: bool) -> None:
    if await totp.must_enroll(session, user_id=user.id):
        raise Unauthenticated("this account must enroll TOTP (in the dashboard) before it "
                              "can get an API token")
    if not second_factor and totp.totp_enabled(await session.get(Credentials, user.id)):
        raise Unauthenticated("this account has TOTP: the grant needs its second factor "
                              "(totp_code, or a web session that passed it)")


async def issue(session: AsyncSession, *, user: User, scopes: list[str] | None = None,
                merchant_id: str | None = None, session_id: str | None = None,
                method: str = "password", second_factor: bool = False,
                stepped_up: bool = False, policy: AuthPolicy = AuthPolicy()) -> TokenPair:
    """A new token family for a user already authenticated by the caller (password and
    code, or a web session): its first access and refresh tokens. ``second_factor``: the
    caller passed the user's TOTP (an account with TOTP, or that must have it, needs it);
    ``stepped_up``: it proved a fresh factor for money (the money scopes need it)."""
    if user.status != UserStatus.ACTIVE:
        raise Unauthenticated(f"this account is {user.status.value}")
    await _refuse_without_second_factor(session, user, second_factor)
    granted = allowed_scopes(user, scopes, stepped_up=stepped_up)
    acting, owns = await _acting_merchant(session, user, merchant_id)
    if acting is not None:  # acting for a merchant is never acting as an admin
        granted = tuple(s for s in granted if s != "admin"
                        and (owns or s not in MONEY_SCOPES))
    family = TokenFamily(id=new_id("tfa"), user_id=user.id, merchant_id=acting,
                         session_id=session_id, scopes=" ".join(granted),
                         created_at=utcnow())
    session.add(family)
    await session.flush()
    await record(session, actor=user.id, action="auth.token_issued", object=family.id,
                 after={"scopes": list(granted), "merchant_id": family.merchant_id,
                        "method": method, "session_id": session_id})
    return await _pair(session, family, policy)


async def issue_enrollment(session: AsyncSession, *, user: User, method: str,
                           policy: AuthPolicy = AuthPolicy()) -> TokenPair:
    """A family whose only use is turning TOTP on, for a user who must have it (an admin,
    or marked by one), has none, and proved one factor (an LNURL-auth login, which has no
    dashboard to enroll in). No scope: it reaches the caller's own TOTP endpoints (which
    need a user's access token and no scope) and ``/me``, nothing else; and it is not
    refreshed, so it lasts one access token. The dashboard gives a password sign-in in the
    same state a session that only opens the enrollment pages."""
    if user.status != UserStatus.ACTIVE:
        raise Unauthenticated(f"this account is {user.status.value}")
    if not await totp.must_enroll(session, user_id=user.id):
        raise Unauthenticated("an enrollment token is only for an account that must enroll "
                              "TOTP and has not")
    family = TokenFamily(id=new_id("tfa"), user_id=user.id, merchant_id=None, session_id=None,
                         scopes="", enroll_only=True, created_at=utcnow())
    session.add(family)
    await session.flush()
    await record(session, actor=user.id, action="auth.token_issued", object=family.id,
                 after={"scopes": [], "merchant_id": None, "method": method,
                        "session_id": None, "enroll_only": True})
    return await _pair(session, family, policy)


async def revoke_family(session: AsyncSession, *, family_id: str, reason: str,
                        actor: str) -> None:
    done = await session.execute(
        update(TokenFamily).where(TokenFamily.id == family_id,
                                  TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason[:80]))
    if done.rowcount:  # type: ignore[attr-defined]
        await record(session, actor=actor, action="auth.token_family_revoked",
                     object=family_id, after={"reason": reason})


def _parse_refresh(token: str) -> tuple[str, str]:
    token = token.strip()
    body = token[len(_REFRESH_PREFIX):] if token.startswith(_REFRESH_PREFIX) else ""
    refresh_id, _, secret = body.partition(".")
    return refresh_id, secret


async def _refresh_row(session: AsyncSession, token: str) -> RefreshToken | None:
    refresh_id, secret = _parse_refresh(token)
    if not secret or not is_id(refresh_id, *_REFRESH_ID):
        return None
    found = await session.get(RefreshToken, refresh_id, with_for_update=True)
    if found is None or not secrets.compare_digest(found.token_hash, digest(secret)):
        return None
    return found


async def family_of(session: AsyncSession, refresh_token: str) -> str | None:
    """The family of a refresh token (spent or not), or None for an unknown one."""
    found = await _refresh_row(session, refresh_token)
    return None if found is None else found.family_id


async def signed_in_at(session: AsyncSession, family_id: str) -> datetime:
    """When the sign-in behind a token family happened: the family's making, or, for a
    family the session grant made from a web session, that session's sign-in (a grant made
    from an old session is no fresher than it)."""
    family = await session.get(TokenFamily, family_id)
    if family is None:
        raise NotFound(f"token family {family_id!r} not found")
    if family.session_id is not None:
        web = await session.get(WebSession, family.session_id)
        if web is not None:
            return min(family.created_at, web.created_at)
    return family.created_at


async def refresh(session: AsyncSession, *, refresh_token: str,
                  policy: AuthPolicy = AuthPolicy()) -> TokenPair:
    """Spend a refresh token for the next pair of its family. A spent token presented again
    revokes the family, written before the refusal is raised (the caller commits it)."""
    found = await _refresh_row(session, refresh_token)
    if found is None:
        raise Unauthenticated("unknown refresh token")
    family = await session.get(TokenFamily, found.family_id, with_for_update=True)
    assert family is not None  # FK
    if family.revoked_at is not None:
        raise Unauthenticated("this token family was revoked; sign in again")
    if family.enroll_only:
        raise Unauthenticated("a token to enroll TOTP is not refreshed: enroll within its "
                              "life, or log in again")
    if found.used_at is not None:
        await revoke_family(session, family_id=family.id, reason="refresh-token-reuse",
                            actor="satvault")
        raise Unauthenticated("this refresh token was used already; every token of its "
                              "family is revoked now, sign in again")
    if found.expires_at <= utcnow():
        raise Unauthenticated("this refresh token has expired; sign in again")
    user = await session.get(User, family.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise Unauthenticated("this account is not active")
    if await totp.must_enroll(session, user_id=user.id):
        # As the grants refuse it: a family issued before TOTP was required does not
        # outlive the requirement (found from outside).
        raise Unauthenticated("this account must enroll TOTP (in the dashboard) before its "
                              "tokens are refreshed")
    if family.session_id is not None and not await _session_alive(session, family.session_id):
        raise Unauthenticated("the web session these tokens came from has ended")
    if family.merchant_id and await _acts_for(session, user, family.merchant_id) is None:
        raise Unauthenticated("this account no longer acts for that merchant")
    found.used_at = utcnow()
    # Narrowed again: a user who lost admin does not keep it through a refresh, nor a family
    # past its step-up's window the money scopes.
    stepped_up = utcnow() < _money_until(family, timedelta(minutes=policy.money_scope_minutes))
    family.scopes = " ".join(s for s in family.scopes.split()
                             if s in allowed_scopes(user, None, stepped_up=stepped_up))
    return await _pair(session, family, policy)


def _money_until(family: TokenFamily, window: timedelta) -> datetime:
    """Until when a family's money scopes hold: ``window`` after its step-up, which the
    grant that issued it proved (the session grant's at most 5 minutes before)."""
    return family.created_at + window


async def _session_alive(session: AsyncSession, session_id: str) -> bool:
    """Whether the web session a token family came from still stands (not revoked, not past
    its lifetime or its idle timeout: the same test as the pages')."""
    found = await session.get(WebSession, session_id)
    now = utcnow()
    return (found is not None and found.revoked_at is None and found.expires_at > now
            and found.last_seen_at + IDLE_TIMEOUT > now)


async def _acts_for(session: AsyncSession, user: User, merchant_id: str) -> bool | None:
    """Whether the user still acts for the merchant (ownership can move): True as its owner,
    False as an admin who does not own it (who sees what the merchant sees, and moves none
    of its money: found from outside, an admin's token acting for another person's merchant
    paid the admin from the merchant's wallet, where the admin's own key is refused), None
    no longer."""
    merchant = await session.get(Merchant, merchant_id)
    if merchant is None:
        return None
    if merchant.owner_user_id == user.id:
        return True
    return False if user.is_admin else None


def _claims(token: str, key: SigningKey, sealer: Sealer) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _key_bytes(key, sealer), algorithms=[ALG], issuer=ISSUER,
            # Expiry is checked below against satvault's clock (tests move it), not pyjwt's.
            options={"require": ["exp", "iat", "sub", "fam"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
    except jwt.PyJWTError as exc:
        raise Unauthenticated("invalid access token") from exc
    return claims


async def authenticate_jwt(session: AsyncSession, token: str, *, sealer: Sealer | None = None,
                           money_window: timedelta = timedelta(
                               minutes=AuthPolicy().money_scope_minutes)) -> Principal:
    """The caller behind an access token, or :class:`Unauthenticated`; the money scopes
    only within ``money_window`` of the family's step-up."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated("malformed access token") from exc
    kid, now = header.get("kid"), utcnow()
    # The header is not yet verified: its kid may decode to anything (a NUL, a lone
    # surrogate), so only the shape our keys have is looked up.
    if header.get("alg") != ALG or not is_id(kid, *_KID):
        raise Unauthenticated("malformed access token")
    key = await session.get(SigningKey, kid)
    if key is None or (key.verify_until is not None and key.verify_until <= now):
        raise Unauthenticated("this access token's signing key is no longer valid")
    claims = _claims(token, key, sealer or Sealer())
    if not isinstance(claims["exp"], int) or datetime.fromtimestamp(
            claims["exp"], tz=now.tzinfo) <= now:
        raise Unauthenticated("this access token has expired; refresh it")
    family = await session.get(TokenFamily, str(claims["fam"]))
    if family is None or family.user_id != claims["sub"]:
        raise Unauthenticated("invalid access token")
    if family.revoked_at is not None:
        raise Unauthenticated("this access token was revoked")
    user = await session.get(User, family.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise Unauthenticated("this account is not active")
    if family.scopes and await totp.must_enroll(session, user_id=user.id):
        # As the grants refuse it: a family issued before TOTP was required does not
        # outlive the requirement (found from outside). A family with no scope is the one
        # a login issues only to enroll: it must work for that.
        raise Unauthenticated("this account must enroll TOTP (in the dashboard) before its "
                              "tokens are used")
    if family.session_id is not None and not await _session_alive(session, family.session_id):
        raise Unauthenticated("the web session this token came from has ended")
    owns = await _acts_for(session, user, family.merchant_id) if family.merchant_id else None
    if family.merchant_id and owns is None:
        raise Unauthenticated("this account no longer acts for that merchant")
    scopes = frozenset(str(claims.get("scope", "")).split()) & frozenset(family.scopes.split())
    if family.merchant_id and not owns:
        scopes -= MONEY_SCOPES
    if not user.is_admin:
        scopes -= {"admin"}
    if now >= _money_until(family, money_window):
        scopes -= MONEY_SCOPES
    if family.merchant_id:
        # Acting for a merchant is acting as that merchant, never as an admin: with the
        # scope, an admin's merchant token reached every admin route under the merchant's
        # name, and approved the admin's own rule set, KYC record and withdrawal as if
        # somebody else (found from outside).
        return Principal(key_id=f"jwt:{family.id}", owner_type="merchant",
                         owner_id=family.merchant_id, scopes=scopes - {"admin"},
                         merchant_id=family.merchant_id, user_id=user.id,
                         admin_moves_money=False)
    return Principal(key_id=f"jwt:{family.id}", owner_type="user", owner_id=user.id,
                     scopes=scopes, user_id=user.id, admin_moves_money=False)
