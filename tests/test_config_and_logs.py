"""Settings precedence (env over TOML over defaults) and secret redaction in logs."""

from __future__ import annotations

import json
import logging

from satvault.config import ConfigError, Settings
from satvault.logs import configure_logging, get_logger


def test_env_overrides_toml_overrides_defaults(tmp_path, monkeypatch):
    toml = tmp_path / "satvault.toml"
    toml.write_text('port = 9100\nnetwork = "signet"\nsecret_key = "from-toml"\n')
    monkeypatch.setenv("SATVAULT_CONFIG", str(toml))
    monkeypatch.setenv("SATVAULT_HOME", str(tmp_path))
    monkeypatch.setenv("SATVAULT_PORT", "9200")
    monkeypatch.delenv("SATVAULT_DATABASE_URL", raising=False)
    s = Settings()
    assert s.port == 9200 and s.network == "signet"
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'satvault.db'}"
    assert "from-toml" not in repr(s) and s.secret_key is not None
    assert s.secret_key.get_secret_value() == "from-toml"


def test_secrets_are_redacted_in_json_logs(capsys):
    configure_logging("info", "json")
    get_logger("t").info("key_created", api_key="sv.key_x.SECRET", password="hunter22",
                         owner="usr_1")
    logging.getLogger("plain").warning("stdlib goes through the same renderer")
    lines = [json.loads(x) for x in capsys.readouterr().err.strip().splitlines()]
    assert lines[0]["api_key"] == "***" and lines[0]["password"] == "***"
    assert lines[0]["owner"] == "usr_1" and "SECRET" not in json.dumps(lines)
    assert lines[1]["event"] == "stdlib goes through the same renderer"


def test_config_mistakes_are_errors_not_silent_defaults(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("SATVAULT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        Settings()
    typo = tmp_path / "typo.toml"
    typo.write_text('databse_url = "postgresql+asyncpg://x@h/db"\n')
    monkeypatch.setenv("SATVAULT_CONFIG", str(typo))
    with pytest.raises(ValueError, match="databse_url"):
        Settings()


def test_database_password_never_in_repr():
    s = Settings(database_url="postgresql+asyncpg://app:s3cret@db.internal/satvault")
    assert "s3cret" not in repr(s) and "app:***@db.internal" in repr(s)


def test_no_url_settings_credentials_in_repr():
    """Found from outside: only database_url was masked; every URL setting is now."""
    s = Settings(
        database_url="postgresql+asyncpg://app@db.internal/satvault?password=s3cret-db",
        bitcoind_url="http://rpc:s3cret-rpc@node.internal:8332/",
        esplora_url="https://reader:s3cret-esplora@esplora.internal/api",
        lnd_url="https://ln:s3cret-lnd@lnd.internal:8080",
        nats_url="nats://bus:s3cret-nats@nats.internal:4222",
        rate_limit_storage="redis://:s3cret-redis@redis.internal:6379/0",
        alert_webhook_urls="https://hooks.example/a?token=s3cret-hook,https://o:s3cret-o@x.example/")
    shown = repr(s)
    assert "s3cret" not in shown, shown
    assert "rpc:***@node.internal" in shown and "reader:***@esplora.internal" in shown
    assert "?password=***" in shown and "redis://:***@redis.internal" in shown


def test_database_urls_get_the_asyncio_driver():
    import pytest

    for typed, used in [
        ("postgresql://app:pw@db.internal:5432/satvault",
         "postgresql+asyncpg://app:pw@db.internal:5432/satvault"),
        ("postgres://app@db/satvault", "postgresql+asyncpg://app@db/satvault"),
        ("postgresql+asyncpg://app@db/satvault", "postgresql+asyncpg://app@db/satvault"),
        ("sqlite:////srv/satvault.db", "sqlite+aiosqlite:////srv/satvault.db"),
        ("postgresql://app@db/satvault?sslmode=require&application_name=sv",
         "postgresql+asyncpg://app@db/satvault?ssl=require&application_name=sv"),
    ]:
        settings = Settings(database_url=typed)
        assert settings.database_url == used
        assert settings.is_sqlite is used.startswith("sqlite")
    for bad in ("postgresql+psycopg2://app@db/x", "mysql://app@db/x", "satvault.db"):
        with pytest.raises(ValueError, match="unsupported database URL"):
            Settings(database_url=bad)
