"""The KYC commands end to end (the real command, in this process): load a sanctions
list, record reviews (a hit is blocked, exit 1), read the history, freeze and unfreeze."""

from __future__ import annotations

from tests.test_cli import last_json, sv_here


def test_kyc_screening_and_freeze_commands(db_url, tmp_path):
    home = tmp_path / "home"
    sv_here("db", "upgrade", url=db_url, home=home)
    user = last_json(sv_here("user", "create", "--email", "dana@example.com", url=db_url,
                             home=home))
    sv_here("user", "create", "--email", "ops@example.com", "--admin", url=db_url, home=home)
    dana_admin = last_json(sv_here("user", "create", "--email", "dana.admin@example.com",
                                   "--admin", url=db_url, home=home))
    lst = tmp_path / "sanctions.csv"
    lst.write_text("name,reference\nDana Ölvarsdóttir,UN-7\nIvan Petrov,UN-8\n")
    loaded = last_json(sv_here("risk", "screening", "load", "--list", "sanctions", "--file",
                          str(lst), url=db_url, home=home))
    assert loaded == {"ok": True, "list": "sanctions", "loaded": 2}
    checked = sv_here("risk", "screening", "check", "DANA OLVARSDOTTIR", url=db_url, home=home)
    assert [h["reference"] for h in last_json(checked)["hits"]] == ["UN-7"]

    base = ("kyc", "record", user["id"], "--tier", "1", "--reviewer", "ops@example.com",
            "--document", "doc://passport/1", "--check", "id-document")
    blocked = sv_here(*base, "--decision", "approve", "--name", "dana olvarsdottir",
                 url=db_url, home=home, check=False)
    assert blocked.returncode == 1 and last_json(blocked)["decision"] == "blocked"
    ok = last_json(sv_here(*base, "--decision", "approve", "--name", "Dana Jones",
                      url=db_url, home=home))
    assert ok["decision"] == "approved" and ok["tier"] == 1
    self_review = sv_here("kyc", "record", user["id"], "--tier", "2", "--reviewer", user["id"],
                     "--decision", "reject", "--name", "Dana Jones", url=db_url, home=home,
                     check=False)
    assert self_review.returncode == 1 and "not an admin" in last_json(self_review)["error"]
    # Found from outside: the reviewer was free text, so anything but the subject's id
    # passed, a made-up name or the subject's own e-mail included.
    for reviewer in ("nobody-at-all", "dana@example.com"):
        made_up = sv_here("kyc", "record", user["id"], "--tier", "2", "--reviewer", reviewer,
                          "--decision", "approve", "--name", "Dana Jones", "--document", "d",
                          "--check", "c", url=db_url, home=home, check=False)
        assert made_up.returncode == 1 and "not an admin" in last_json(made_up)["error"]
    history = last_json(sv_here("kyc", "history", user["id"], url=db_url, home=home))
    assert history["kyc_tier"] == 1
    assert [r["decision"] for r in history["records"]] == ["blocked", "approved"]

    wallet = user["wallet_id"]
    frozen = last_json(sv_here("wallet", "freeze", wallet, "--reason", "fraud report #4",
                          url=db_url, home=home))
    assert frozen["frozen"] is True and frozen["reason"] == "fraud report #4"
    again = sv_here("wallet", "freeze", wallet, "--reason", "x", url=db_url, home=home, check=False)
    assert again.returncode == 1 and "frozen already" in last_json(again)["error"]
    # Its owner may not unfreeze it, also an admin owning it (found from outside: the
    # command took free text, so the owner unfroze under any name).
    theirs = dana_admin["wallet_id"]
    sv_here("wallet", "freeze", theirs, "--reason", "check", "--as", "ops@example.com",
            url=db_url, home=home)
    own = sv_here("wallet", "unfreeze", theirs, "--reason", "mine", "--as",
                  "dana.admin@example.com", url=db_url, home=home, check=False)
    assert own.returncode == 1 and "other than its owner" in last_json(own)["error"], own.stdout
    nameless = sv_here("wallet", "unfreeze", wallet, "--reason", "x", "--as", "cli",
                       url=db_url, home=home, check=False)
    assert nameless.returncode == 1 and "not an admin" in last_json(nameless)["error"]
    assert last_json(sv_here("wallet", "unfreeze", wallet, "--reason", "cleared", "--as",
                        "ops@example.com", url=db_url, home=home))["frozen"] is False
