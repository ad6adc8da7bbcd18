"""Where a live event stream stands, and the ``id:`` its frames carry so that a reconnect
resumes exactly there.

On PostgreSQL an outbox id is taken at INSERT and seen at COMMIT, so a transaction holding a
lower id can commit after a higher one was sent. An event id alone then cannot say what a
client has: "everything up to 1050" is false while 1047 is still to commit, and a stream
resumed after 1050 never sent it (found from outside, twice: a stream opened "from now", or
resumed with ``Last-Event-ID``, while such a transaction was open). A :class:`StreamCursor`
says it exactly: every event of the stream up to ``complete`` is the client's, and above it
those in ``above``. A frame's ``id:`` is its :meth:`~StreamCursor.token`: the plain number
``complete`` when nothing is above it (always on SQLite, where ids commit in order, and on
PostgreSQL once the stream knows every lower id has committed), else
``complete:id,id,…`` (``1047:1048,1050``). EventSource sends it back as ``Last-Event-ID``;
a plain event id still means "every event up to it".

The token names at most :data:`MAX_ABOVE` ids above ``complete``, the highest. One that it
leaves out (only while a transaction stays open across more than that many of a stream's
events) is sent again after a reconnect: a repeat, never a loss.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from satvault.events.errors import InvalidStream

__all__ = ["MAX_ABOVE", "MAX_TOKEN_LENGTH", "TOKEN_PATTERN", "StreamCursor"]

MAX_ABOVE = 50
_ID = r"[0-9]{1,18}"
TOKEN_PATTERN = rf"^(?:{_ID}(?::{_ID}(?:,{_ID}){{0,{MAX_ABOVE - 1}}})?)?$"
_TOKEN = re.compile(TOKEN_PATTERN)
# The longest token the pattern allows: ``complete``, then MAX_ABOVE ids, 18 digits each.
MAX_TOKEN_LENGTH = 18 + (MAX_ABOVE * 19)


@dataclass
class StreamCursor:
    """Every event id up to ``complete`` is the client's, and above it those in ``above``."""

    complete: int = 0
    above: set[int] = field(default_factory=set)
    # The highest of ``above``, in order, for the token: a frame's cost stays constant while
    # thousands are sent above a floor held still by a transaction left open.
    _shown: list[int] = field(default_factory=list, compare=False, repr=False)

    def has(self, event_id: int) -> bool:
        return event_id <= self.complete or event_id in self.above

    def add(self, event_id: int) -> None:
        """The client has ``event_id`` now (sent, or counted as before the stream's start)."""
        if event_id <= self.complete or event_id in self.above:
            return
        self.above.add(event_id)
        if len(self._shown) < MAX_ABOVE or event_id > self._shown[0]:
            bisect.insort(self._shown, event_id)
            if len(self._shown) > MAX_ABOVE:
                del self._shown[0]

    def settle(self, upto: int) -> None:
        """Every event up to ``upto`` is the client's: the caller knows none is still to
        commit below it that was not sent."""
        if upto <= self.complete:
            return
        self.complete = upto
        if self.above:
            self.above = {i for i in self.above if i > upto}
            self._shown = sorted(self.above)[-MAX_ABOVE:]

    @property
    def last(self) -> int:
        """The highest id the client has."""
        return self._shown[-1] if self._shown else self.complete

    def token(self) -> str:
        if not self._shown:
            return str(self.complete)
        return f"{self.complete}:{','.join(map(str, self._shown))}"

    @classmethod
    def parse(cls, token: str) -> StreamCursor:
        """A cursor from a frame's ``id:`` (or a plain event id), or :class:`InvalidStream`."""
        # Only blanks around it are dropped (an HTTP header's own): a newline or another
        # control character is refused, and ``fullmatch``, since ``$`` also matches before a
        # final newline. The length first, so that a long value costs nothing to refuse.
        token = token.strip(" \t")
        if (not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii()
                or not _TOKEN.fullmatch(token)):
            raise InvalidStream("Last-Event-ID must be an event id or a stream position as "
                                "the stream's frames carry it (e.g. 1047 or 1047:1048,1050)")
        complete, _, above = token.partition(":")
        cursor = cls(int(complete))
        for part in filter(None, above.split(",")):
            cursor.add(int(part))
        return cursor
