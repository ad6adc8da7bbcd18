"""Object ids: the prefix, then ``length`` characters of the Crockford-like alphabet, each
one of its 32 letters (5 random bits), distinct across many draws."""

from __future__ import annotations

from collections import Counter

from satvault.kernel.ids import new_id

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
