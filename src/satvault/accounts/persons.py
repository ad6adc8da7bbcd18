"""The person behind a wallet: the wallets that count together, in the withdrawal limits
(migration 0061) and in the risk rules' ``person.*`` windows (migration 0067).

A user's wallet: every wallet of its asset of that user and of the merchants whose
``owner_user_id`` is the user. A merchant's wallet: its owner's group, or the wallet alone
for a merchant nobody owns. PostgreSQL names the group with ``limit_group`` /
``limit_wallets`` (0061); :func:`person_wallets` is the same set as a SQLAlchemy selectable,
which SQLite runs (and the tests hold the functions to)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select, union_all
from sqlalchemy.orm import aliased

from satvault.accounts.models import Merchant, Wallet

__all__ = ["other_wallets", "person_of", "person_wallets"]


def person_of(wallet_id: Any) -> Any:
    """The person behind ``wallet_id`` (a column, correlated, or a value) as one key: the
    user's id for a user's wallet, the owner's for an owned merchant's, the merchant's own for
    one nobody owns (the ``person`` :func:`person_wallets` groups by). A scalar subquery: one
    primary-key probe, and one more for a merchant's wallet. Correlated explicitly: a paying
    wallet of the enclosing read may be two levels up."""
    me, m = aliased(Wallet, name="po_me"), aliased(Merchant, name="po_m")
    owner = select(m.owner_user_id).where(m.id == me.owner_id).scalar_subquery()
    return select(case((me.owner_type == "merchant", func.coalesce(owner, me.owner_id)),
                       else_=me.owner_id)).where(me.id == wallet_id) \
        .correlate_except(me).scalar_subquery()


def person_wallets(wallet_id: Any) -> Any:
    """The ids of the wallets that count with ``wallet_id``'s (see the module docstring),
    ``wallet_id`` among them: only scalar subqueries, so it correlates with a paying
    :class:`Wallet` of the enclosing read, or takes a bound parameter."""
    me = aliased(Wallet, name="lw_me")
    g, o = aliased(Wallet, name="lw_g"), aliased(Merchant, name="lw_o")
    alone = aliased(Wallet, name="lw_alone")
    person = person_of(wallet_id)
    # Correlated explicitly: a paying wallet of the enclosing read is two levels up.
    asset = select(me.asset).where(me.id == wallet_id).correlate_except(me).scalar_subquery()
    return union_all(
        select(g.id).where(g.owner_type == "user", g.owner_id == person, g.asset == asset),
        select(g.id).join(o, and_(g.owner_type == "merchant", g.owner_id == o.id))
        .where(o.owner_user_id == person, g.asset == asset),
        select(alone.id).where(alone.id == wallet_id, alone.owner_type != "user",
                               alone.owner_id == person).correlate_except(alone))


def other_wallets(owner_type: str, owner_id: Any, wallet_id: Any) -> Any:
    """The ids of the other wallets of :func:`person_wallets`'s group of ``wallet_id``, whose
    owner is ``owner_type`` (known when the statement is built) and ``owner_id``: a user's
    merchants' wallets; a merchant's owner's wallet and the owner's other merchants' (none
    for a merchant nobody owns). Fewer lookups than the whole group less the wallet."""
    g, o = aliased(Wallet, name="ow_g"), aliased(Merchant, name="ow_o")
    asset = select(Wallet.asset).where(Wallet.id == wallet_id).scalar_subquery()
    if owner_type == "user":
        person: Any = owner_id
    else:
        person = select(Merchant.owner_user_id).where(Merchant.id == owner_id) \
            .scalar_subquery()
    merchants = select(g.id).join(o, and_(g.owner_type == "merchant", g.owner_id == o.id)) \
        .where(o.owner_user_id == person, g.asset == asset, g.id != wallet_id)
    if owner_type == "user":
        return merchants
    return union_all(
        select(g.id).where(g.owner_type == "user", g.owner_id == person, g.asset == asset),
        merchants)
