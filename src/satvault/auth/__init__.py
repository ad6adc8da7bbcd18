"""Who is signed in: server-side web sessions (this package's :mod:`.sessions`), and the
factors and tokens around them (sign-up and e-mail verification, TOTP, payment passwords and
step-up, JWT access tokens)."""
