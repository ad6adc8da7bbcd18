"""People signing in: web sessions, e-mail verification and password reset, the TOTP second
factor with recovery codes, the payment password and step-up for money, progressive lockout,
and short-lived JWT access tokens with rotating signing keys and refresh-token families.

Placed beside ``kyc`` (above accounts, whose users it authenticates; below every money
domain, whose dashboard actions ask it for a step-up). Services take a session and plain
values and never commit; the mail goes out after the caller's unit of work, never inside it.
"""
