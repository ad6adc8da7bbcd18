"""``satvault review …``: the items the platform hands a person (docs/operations.md,
"Review items").

``list`` and ``show`` read; ``resolve`` closes an open item once with a note saying what was
done, as the admin named by ``--as`` (audited). Resolving changes nothing else: a correction
the item calls for is booked on its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.cli._common import admin_actor, emit, in_transaction
from satvault.reconcile import review

__all__ = ["app"]

app = typer.Typer(help="Review items: what waits for a person.", no_args_is_help=True)
Item = Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The item's id.")]


@app.command("list")
def list_(kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
          status: Annotated[str, typer.Option(help="open, resolved or all.")] = "open",
          limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
          cursor: Annotated[str | None, typer.Option(
              help="The next_cursor of the page before.")] = None) -> None:
    """Items, newest first, one page (``next_cursor`` gives the next)."""
    if status not in ("open", "resolved", "all"):
        raise typer.BadParameter("open, resolved or all", param_hint="--status")
    which: Literal["open", "resolved", "all"] = status  # type: ignore[assignment]

    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, **await review.list_items(s, kind=kind, status=which,
                                                      limit=limit, cursor=cursor)}
    emit(in_transaction(work))


@app.command("show")
def show(item: Item) -> None:
    """One item with its details and, once resolved, who resolved it and why."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, "item": await review.get_item(s, item)}
    emit(in_transaction(work))


@app.command("resolve")
def resolve(item: Item,
            as_: Annotated[str, typer.Option("--as", help="The acting admin's e-mail "
                                             "address or id.")],
            note: Annotated[str, typer.Option(help="What was done (required).")]) -> None:
    """Resolve an open item with a note; an item resolved already is refused (exit 1)."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, "item": await review.resolve_item(
            s, item_id=item, actor=await admin_actor(s, as_), note=note)}
    emit(in_transaction(work))
