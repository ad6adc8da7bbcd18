"""Settings that are unsafe or break the platform later are refused at start-up (found from
outside, stop 32: negative fees and reserves, zero or negative intervals and timeouts were
accepted; every numeric setting now has its bounds)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from satvault.config import Settings


@pytest.mark.parametrize("field,value", [
    # platform_fee() raises ValueError on a negative fee_bp: every store-invoice payment
    # the watcher or the Lightning credit books then fails, long after start-up.
    ("invoice_fee_bp", -100),
    # Above 10,000 bp the platform's fee is more than the payment itself.
    ("invoice_fee_bp", 20_000),
    # A negative reserve: an on-chain withdrawal's hold is amount + reserve < amount.
    ("withdrawal_fee_reserve_sat", -5_000),
    # Lightning fee reserve below zero (payments.py: max(-(-amount*ppm//1e6), min)).
    ("ln_fee_reserve_ppm", -5_000),
    # Deposits credited at a negative confirmation count.
    ("deposit_confirmations", -1),
    # Worker intervals of zero or less: a busy loop against the node and the database.
    ("payout_interval", 0),
    ("watcher_interval", -1),
    ("custody_interval", 0),
    # A Lightning payment that times out at once.
    ("ln_pay_timeout_seconds", 0),
])
def test_unsafe_setting_is_refused(field, value, tmp_path):
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, **{field: value})
