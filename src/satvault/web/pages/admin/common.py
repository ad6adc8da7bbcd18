"""What the admin pages share: their router, the status and message of a service's refusal
shown on a form, and the actor strings the admin API passes to the services."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from satvault.accounts.service import Principal
from satvault.kernel.errors import SatvaultError
from satvault.web.pages.deps import mark_page
from satvault.web.problems import problem_for

__all__ = ["admin_router", "case_actor", "refusal"]


def admin_router() -> APIRouter:
    return APIRouter(prefix="/admin", include_in_schema=False,
                     dependencies=[Depends(mark_page)])


def refusal(exc: SatvaultError) -> tuple[int, str]:
    """The status the API answers a service's refusal with, and its message, for a form."""
    resp = problem_for(exc)
    return (resp.status_code if resp is not None else 422), str(exc)


def case_actor(principal: Principal) -> str:
    """The actor the risk-case API names (``user:<id>``)."""
    return f"user:{principal.owner_id}"
