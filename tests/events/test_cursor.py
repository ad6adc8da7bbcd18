"""A stream's position as its frames carry it (``satvault.events.cursor``)."""

from __future__ import annotations

import pytest

from satvault.events.cursor import MAX_ABOVE, StreamCursor
from satvault.events.errors import InvalidStream


def test_a_position_says_exactly_what_the_client_has_and_reads_back_the_same():
    cursor = StreamCursor(1047)
    assert cursor.token() == "1047" and cursor.last == 1047
    cursor.add(1050)
    cursor.add(1048)
    cursor.add(12)  # below complete: it had it already
    assert cursor.token() == "1047:1048,1050" and cursor.last == 1050
    assert [cursor.has(i) for i in (12, 1047, 1048, 1049, 1050, 1051)] == \
        [True, True, True, False, True, False]
    again = StreamCursor.parse(cursor.token())
    assert again == cursor
    cursor.settle(1049)  # 1049 committed and sent, or gone: every id up to it is the client's
    assert cursor.token() == "1049:1050"
    cursor.settle(1050)
    assert cursor.token() == "1050" and StreamCursor.parse("1050") == cursor


def test_a_long_position_names_the_highest_ids_and_so_repeats_rather_than_loses():
    cursor = StreamCursor(100)
    for i in range(101, 101 + 2 * MAX_ABOVE, 2):
        cursor.add(i)
    token = cursor.token()
    assert len(token.split(":")[1].split(",")) == MAX_ABOVE
    back = StreamCursor.parse(token)
    assert back.complete == 100 and back.above <= cursor.above
    assert all(back.has(i) == cursor.has(i) for i in range(100, 300) if i > 101 + MAX_ABOVE)


@pytest.mark.parametrize("bad", ["", " ", "a", "1:", ":1", "1:2,", "1:2:3", "-1", "1" * 19,
                                 "1:" + ",".join(["2"] * (MAX_ABOVE + 1)), "١٢", "1;2",
                                 "1\n", "\n1", "1\x1f", "1 2", "9" * 5000])
def test_anything_else_is_a_clear_error(bad):
    with pytest.raises(InvalidStream, match="Last-Event-ID"):
        StreamCursor.parse(bad)
