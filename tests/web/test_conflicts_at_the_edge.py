"""A database conflict that reaches the HTTP edge unretried (a deadlock, a serialisation
failure, a lock timeout) rolled its transaction back: the answer is 409 concurrent-update,
never a 500, and an idempotency key does not keep it as the request's answer (found from
outside: a deadlock under concurrent decisions on one wallet answered 500)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import DBAPIError

from satvault.web.problems import problem_for


class _Driver(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40P01", "40001", "55P03"])
def test_a_conflict_is_a_409_that_names_no_sql(sqlstate):
    exc = DBAPIError("UPDATE withdrawals SET status=$1 WHERE id = $2", {}, _Driver(sqlstate))
    answer = problem_for(exc)
    assert answer is not None and answer.status_code == 409
    body = json.loads(bytes(answer.body))
    assert body["type"].endswith("/concurrent-update") and "UPDATE" not in body["detail"]


def test_other_database_errors_stay_unmapped():
    exc = DBAPIError("SELECT 1", {}, _Driver("23505"))  # a unique violation: a bug, not a race
    assert problem_for(exc) is None
