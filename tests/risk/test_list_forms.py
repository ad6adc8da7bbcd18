"""Address lists name an address however it was written: a bech32 address in upper case
(the QR-code form, as valid as the lower) and a node key in upper-case hex are the same
destination as their lower-case forms, on the list and in the request alike."""

from __future__ import annotations

import sqlite3

from satvault.lightning.bolt11check import check_invoice
from satvault.migrate import upgrade
from satvault.risk.lists import refresh_sanctions
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund
from tests.risk.test_withdrawals import DEST, keys
from tests.test_cli import last_json, sv_here

SAT = 1000


async def test_a_sanctions_list_in_upper_case_still_refuses_its_addresses(lnenv: LnEnv):
    env = lnenv
    auth, _admin = await keys(env)
    await fund(env, env.wallet, 1_000_000 * SAT)
    outside = env.network.create_invoice("customer2", 2_000 * SAT).bolt11
    payee = check_invoice(outside, network="regtest").payee
    async with env.sessions() as s, s.begin():
        await refresh_sanctions(s, actor="user:admin", text="\n".join(
            [DEST.upper(), payee.upper()]))
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        onchain = await c.post(url, headers={**auth, "Idempotency-Key": "a"},
                               json={"destination": DEST, "amount_msat": 10_000 * SAT})
        upper = await c.post(url, headers={**auth, "Idempotency-Key": "b"},
                             json={"destination": f"bitcoin:{DEST.upper()}",
                                   "amount_msat": 10_000 * SAT})
        lightning = await c.post(url, headers={**auth, "Idempotency-Key": "c"},
                                 json={"destination": outside})
    for r in (onchain, upper, lightning):
        assert r.status_code == 403, r.text
        assert r.json()["type"].endswith("/risk-rejected"), r.text


def test_rows_loaded_before_are_brought_to_the_same_form(tmp_path):
    """Migration 0048: an upper-case bech32 entry or node key is lower-cased (a duplicate of
    a lower-case row under the same label dropped); base58 stays as written."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0047_voucher_link_tokens")
    key = "02" + "AB" * 32
    rows = [(DEST.upper(), "sanctioned"), (key, "mixer"), (key.lower(), "mixer"),
            ("1ECeZBxCVJ8Wm2JSN3Cyc6rge2gnvD3W5K", "sanctioned")]
    with sqlite3.connect(tmp_path / "m.db") as db:
        db.executemany("INSERT INTO risk_address_labels (address, label, score, source, "
                       "loaded_at) VALUES (?, ?, 1, '', '2026-12-01 00:00:00')", rows)
    upgrade(url)
    with sqlite3.connect(tmp_path / "m.db") as db:
        got = sorted(db.execute("SELECT address, label FROM risk_address_labels"))
    assert got == sorted([(DEST, "sanctioned"), (key.lower(), "mixer"),
                          ("1ECeZBxCVJ8Wm2JSN3Cyc6rge2gnvD3W5K", "sanctioned")])


async def test_a_list_entry_written_as_a_payment_uri_names_its_address(lnenv: LnEnv, db_url,
                                                                       tmp_path):
    """Found from outside: an entry copied from a payment request, ``bitcoin:BC1Q…?amount=1``,
    was stored as written and never matched the address it names. Loaded from the command
    line it is stored as that address; a URI that names no address is refused, naming its
    line."""
    env = lnenv
    auth, _admin = await keys(env)  # root@example.com, an admin
    await fund(env, env.wallet, 1_000_000 * SAT)
    listed = tmp_path / "sdn.txt"
    listed.write_text(f"bitcoin:{DEST.upper()}?amount=1&label=Listed\n")
    home = tmp_path / "home"
    n = last_json(sv_here("risk", "sanctions", "refresh", "--file", str(listed), "--as",
                          "root@example.com", url=db_url, home=home))
    assert n["addresses"] == 1
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        for n, destination in enumerate((DEST, f"bitcoin:{DEST}?amount=0.0001")):
            r = await c.post(url, headers={**auth, "Idempotency-Key": f"{n}"},
                             json={"destination": destination, "amount_msat": 10_000 * SAT})
            assert r.status_code == 403 and r.json()["type"].endswith("/risk-rejected"), r.text

    labels = tmp_path / "labels.csv"
    labels.write_text(f"address,label,score\nBITCOIN:{DEST}?amount=1,mixer,70\n"
                      "bitcoin:?amount=1,mixer,70\n")
    bad = sv_here("risk", "labels", "load", "--file", str(labels), "--as", "root@example.com",
                  url=db_url, home=home, check=False)
    assert bad.returncode == 1, bad.stdout
    assert "line 3: 'bitcoin:?amount=1' is a payment URI without an address" in \
        last_json(bad)["error"]


def test_payment_uris_loaded_before_are_brought_to_their_address(tmp_path):
    """Migration 0051: a ``bitcoin:`` entry becomes the address it names (dropped where the
    list holds that address under the label already, or where it names none)."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0050_held_withdrawal_limits")
    rows = [(f"bitcoin:{DEST.upper()}?amount=1", "sanctioned"),
            (f"BITCOIN:{DEST}", "mixer"), (DEST, "mixer"), ("bitcoin:?amount=1", "scam"),
            ("bitcoin:1ECeZBxCVJ8Wm2JSN3Cyc6rge2gnvD3W5K?label=x", "scam")]
    with sqlite3.connect(tmp_path / "m.db") as db:
        db.executemany("INSERT INTO risk_address_labels (address, label, score, source, "
                       "loaded_at) VALUES (?, ?, 1, '', '2026-12-01 00:00:00')", rows)
    upgrade(url)
    with sqlite3.connect(tmp_path / "m.db") as db:
        got = sorted(db.execute("SELECT address, label FROM risk_address_labels"))
    assert got == sorted([(DEST, "sanctioned"), (DEST, "mixer"),
                          ("1ECeZBxCVJ8Wm2JSN3Cyc6rge2gnvD3W5K", "scam")])
