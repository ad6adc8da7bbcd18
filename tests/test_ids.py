"""Object ids: the prefix, then ``length`` characters of the Crockford-like alphabet, each
one of its 32 letters (5 random bits), distinct across many draws; ``is_id`` knows that shape."""

from __future__ import annotations

from collections import Counter

from satvault.kernel.ids import is_id, new_id

ALPHABET = set("0123456789abcdefghjkmnpqrstvwxyz")


def test_ids_have_the_prefix_the_length_and_only_the_alphabet():
    for length in (1, 8, 20, 21, 40):
        for _ in range(50):
            prefix, _, body = new_id("wd", length).partition("_")
            assert prefix == "wd" and len(body) == length and set(body) <= ALPHABET


def test_ids_use_every_letter_and_do_not_repeat():
    ids = [new_id("x") for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    letters = Counter(ch for i in ids for ch in i[2:])
    # 100,000 letters over 32: about 3,125 each; every letter drawn, none far off.
    assert set(letters) == ALPHABET
    assert all(2_700 < n < 3_550 for n in letters.values()), letters


def test_is_id_accepts_what_new_id_makes_and_nothing_else():
    """The check made on ids a client decoded (a JWT's kid, a refresh token's id) before they
    are looked up: a NUL, a lone surrogate or a wrong prefix, length or letter is refused."""
    for length in (1, 16, 20):
        assert all(is_id(new_id("kid", length), "kid", length) for _ in range(50))
    good = new_id("kid", 16)
    for bad in (None, 7, b"kid_0123456789abcdef", "", "kid_", good[:-1], good + "a",
                "kie" + good[3:], "kid-" + good[4:], good[:-1] + "\x00", good[:-1] + "\ud800",
                good[:-1] + "i", good[:-1] + "A", good[:-1] + "\u0660"):
        assert not is_id(bad, "kid", 16), bad
