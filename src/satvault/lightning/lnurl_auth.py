"""LNURL-auth logins (LUD-04), served by satvault: the services behind
``/lnurl-auth/…`` in :mod:`satvault.web.routes.lnurl`.

A challenge ``k1`` (32 random bytes) signed by a wallet's linking key logs in the user bound
to that key, created on first use. The browser that asked for the challenge also got a
secret; only with it can it exchange the verified challenge, once, for a token family
(:mod:`satvault.auth.tokens`: a 10-minute access token and a refresh token), whose money
scope lapses 15 minutes after the signature like any family's. ``k1`` itself is no
credential: it is in the QR code, in the wallet's callback URL and so in access logs.

The signature is a possession factor. For a user without TOTP it is the only one; a user
who enrolled TOTP adds a current code to the exchange, checked and counted by the password
grant's own check (:func:`satvault.auth.signin.check_second_factor`), and the challenge is
spent only by the exchange that succeeds. An account that must have TOTP and has none gets
a family that can only enroll it (:func:`satvault.auth.tokens.issue_enrollment`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, der_to_cdata, signature_normalize
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User, UserStatus
from satvault.accounts.security import hash_secret
from satvault.accounts.service import create_user
from satvault.auth.credentials import AuthPolicy
from satvault.auth.errors import SecondFactorNeeded
from satvault.auth.models import Credentials
from satvault.auth.signin import check_second_factor, signed_in
from satvault.auth.tokens import TokenPair, issue, issue_enrollment
from satvault.auth.totp import required_of, totp_enabled
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import AlreadyExists, ConcurrentUpdate, NotFound
from satvault.kernel.retrying import retrying
from satvault.lightning.lnurl import encode_lnurl
from satvault.lightning.lnurl_models import ChallengeStatus, LnurlAuthChallenge, LnurlAuthKey
from satvault.lightning.lnurl_service import Refused, base_url

__all__ = ["AUTH_TTL", "SESSION_SCOPES", "Challenge", "Login", "LoginRefused",
           "exchange_login", "new_challenge", "verify_login", "verify_login_signature"]

AUTH_TTL = timedelta(minutes=10)
AUTH_PURGE_AFTER = timedelta(days=1)
SESSION_SCOPES = ("wallet:read", "wallet:write", "withdrawals:write")
_NO_UPDATE_SYNC = {"synchronize_session": False}


class LoginRefused(Exception):
    """Why a verified login cannot be exchanged for a token family: ``reason`` is one of
    ``used``, ``expired``, ``pending`` or ``disabled``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_KEY = re.compile(r"0[23][0-9a-f]{64}")


def verify_login_signature(k1: str, sig: str, key: str) -> bool:
    """LUD-04: ``sig`` (DER, hex) signs the 32 bytes of ``k1`` (hex) with ``key`` (compressed
    secp256k1, hex). High-S signatures are normalised first, as signers differ there. Each is
    plain lower-case hex, nothing else (found from outside: ``bytes.fromhex`` skips blanks,
    so ``03 4f35…`` passed as the key it spells, and the key's text, blanks and all, became
    the account's identity)."""
    if not (_KEY.fullmatch(key) and _HEX.fullmatch(sig) and _HEX.fullmatch(k1)):
        return False
    try:
        message, der, pub = bytes.fromhex(k1), bytes.fromhex(sig), bytes.fromhex(key)
        if len(message) != 32 or len(pub) != 33 or not 8 <= len(der) <= 73:
            return False
        _, low_s = signature_normalize(der_to_cdata(der))
        return PublicKey(pub).verify(cdata_to_der(low_s), message, hasher=None)
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class Challenge:
    k1: str
    lnurl: str
    session_token: str  # the browser's secret for exchange_login
    expires_at: datetime


async def new_challenge(session: AsyncSession, *, settings: Settings) -> Challenge:
    """A fresh login challenge (challenges a day past their expiry are purged on the way)."""
    now = utcnow()
    await session.execute(delete(LnurlAuthChallenge).where(
        LnurlAuthChallenge.expires_at < now - AUTH_PURGE_AFTER))
    k1, token = secrets.token_hex(32), secrets.token_urlsafe(32)
    session.add(LnurlAuthChallenge(k1=k1, session_hash=hash_secret(token),
                                   status=ChallengeStatus.OPEN,
                                   created_at=now, expires_at=now + AUTH_TTL))
    url = f"{base_url(settings)}/lnurl-auth/callback?tag=login&k1={k1}&action=login"
    return Challenge(k1=k1, lnurl=encode_lnurl(url), session_token=token,
                     expires_at=now + AUTH_TTL)


async def _user_for_key(session: AsyncSession, key: str) -> str:
    """The user bound to a linking key, created (with a placeholder e-mail) on first use."""
    bound = await session.get(LnurlAuthKey, key)
    if bound is None:
        try:
            async with session.begin_nested():
                # The whole key, hashed (an address's local part holds 64 characters, and
                # two keys sharing their first 40 hex digits shared one placeholder).
                local = hashlib.sha256(key.encode()).hexdigest()[:40]
                new = await create_user(session, email=f"{local}@lnurl-auth.invalid",
                                        display_name=f"lnurl-auth {key[:12]}",
                                        actor="lnurl-auth")
                bound = LnurlAuthKey(linking_key=key, user_id=new.id, created_at=utcnow())
                session.add(bound)
                await session.flush()
        except IntegrityError as exc:  # the same key logging in twice at once
            raise ConcurrentUpdate("linking key registered concurrently") from exc
        except AlreadyExists as exc:
            # Either a concurrent first login committed just now, or the placeholder address
            # is someone else's: only the former binds the key.
            bound = await session.get(LnurlAuthKey, key)
            if bound is None:
                raise Refused("cannot open an account for this key") from exc
    owner = await session.get(User, bound.user_id)
    if owner is None or owner.status != UserStatus.ACTIVE:
        raise Refused("this account is disabled")
    return owner.id


async def _verify_challenge(session: AsyncSession, *, k1: str, key: str) -> None:
    challenge = await session.get(LnurlAuthChallenge, k1, with_for_update=True,
                                  populate_existing=True)
    if challenge is None:
        raise Refused("unknown k1")
    if challenge.status != ChallengeStatus.OPEN:
        raise Refused("this k1 was already used")
    now = utcnow()
    if challenge.expires_at <= now:
        raise Refused("this login request has expired")
    user_id = await _user_for_key(session, key)
    done = await session.execute(
        update(LnurlAuthChallenge)
        .where(LnurlAuthChallenge.k1 == k1, LnurlAuthChallenge.status == ChallengeStatus.OPEN)
        .values(status=ChallengeStatus.VERIFIED, linking_key=key, user_id=user_id, verified_at=now)
        .execution_options(**_NO_UPDATE_SYNC))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Refused("this k1 was already used")


async def verify_login(sessions: async_sessionmaker[AsyncSession], *, k1: str,
                       key: str) -> None:
    """Mark the challenge ``k1`` verified by the linking key ``key`` (its signature checked
    already with :func:`verify_login_signature`), binding or creating its user. Raises
    :class:`Refused`, or the domain's own errors."""
    await retrying(sessions, lambda s: _verify_challenge(s, k1=k1, key=key))


@dataclass(frozen=True, slots=True)
class Login:
    """An exchanged login: the token family, its user, and whether the family only enrolls
    TOTP (the account must have it and has none)."""

    pair: TokenPair
    user: User
    enroll_only: bool


async def _second_factor(session: AsyncSession, user: User, code: str | None, *, ip: str,
                         policy: AuthPolicy) -> tuple[bool, bool]:
    """Whether the login passed the user's TOTP, and whether it may only enroll it. A user
    with TOTP gives a code, checked (and a wrong one counted, the lockout honoured) as at
    the password grant; a missing one is :class:`SecondFactorNeeded`."""
    creds = await session.get(Credentials, user.id)
    if totp_enabled(creds):
        if not code:
            raise SecondFactorNeeded("this account has TOTP: send a current code from the "
                                     "authenticator app (or a recovery code) as totp")
        await check_second_factor(session, user_id=user.id, code=code, ip=ip, policy=policy)
        return True, False
    return False, required_of(user, creds)


async def exchange_login(session: AsyncSession, *, k1: str, session_token: str,
                         totp_code: str | None = None, ip: str = "",
                         policy: AuthPolicy = AuthPolicy()) -> Login:
    """Exchange a verified challenge, once and before it expires, for a token family (as a
    password + TOTP sign-in gets): a short-lived access token and a refresh token, with
    :data:`SESSION_SCOPES`. The wallet's signature, made minutes ago, is the step-up: the
    money scope holds ``policy.money_scope_minutes`` from now, then lapses like any
    family's. A user who enrolled TOTP gives a current code too (``totp_code``); without
    one, or with a wrong one (:class:`SecondFactorNeeded`, :class:`InvalidCode`,
    :class:`AccountLocked`), the challenge stays verified for another try. A wrong code is
    counted before it is raised: the caller commits it. An account that must have TOTP and
    has none gets a family that can only enroll it (:func:`issue_enrollment`). A wrong
    ``session_token`` is a missing challenge (NotFound); the other refusals are
    :class:`LoginRefused`."""
    challenge = await session.get(LnurlAuthChallenge, k1.lower(), with_for_update=True)
    if challenge is None or not hmac.compare_digest(hash_secret(session_token),
                                                    challenge.session_hash):
        raise NotFound("no such login request")
    now = utcnow()
    if challenge.status == ChallengeStatus.CONSUMED:
        raise LoginRefused("used", "this login was already used")
    if challenge.expires_at <= now:
        raise LoginRefused("expired", "this login request has expired")
    if challenge.status != ChallengeStatus.VERIFIED or challenge.user_id is None:
        raise LoginRefused("pending", "no wallet has signed this login request yet")
    user = await session.get(User, challenge.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise LoginRefused("disabled", "this account is disabled")
    # Before the challenge is spent: a missing or wrong code leaves it for another try.
    with_totp, enroll_only = await _second_factor(session, user, totp_code, ip=ip,
                                                  policy=policy)
    done = await session.execute(
        update(LnurlAuthChallenge)
        .where(LnurlAuthChallenge.k1 == challenge.k1,
               LnurlAuthChallenge.status == ChallengeStatus.VERIFIED)
        .values(status=ChallengeStatus.CONSUMED, consumed_at=now)
        .execution_options(**_NO_UPDATE_SYNC))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise LoginRefused("used", "this login was already used")
    method = "lnurl-auth+totp" if with_totp else "lnurl-auth"
    if enroll_only:
        pair = await issue_enrollment(session, user=user, method="lnurl-auth:enroll-totp",
                                      policy=policy)
    else:
        # The linking key's signature is a possession factor proved within the challenge's
        # life: for a user without TOTP it stands for the second factor, and it is the
        # step-up a password grant must add.
        pair = await issue(session, user=user, scopes=list(SESSION_SCOPES), method=method,
                           second_factor=True, stepped_up=True, policy=policy)
    await signed_in(session, user_id=user.id, ip=ip,
                    method=f"{method}:{(challenge.linking_key or '')[:16]}")
    return Login(pair=pair, user=user, enroll_only=enroll_only)
