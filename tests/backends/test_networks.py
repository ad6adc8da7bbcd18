"""``NetworkGuard``: the chain node's network against the configured one, asked on first
contact, again after the node was unreachable, and again once ``recheck_seconds`` passed on
the process clock, through either adapter."""

from __future__ import annotations

import pytest

from satvault.backends.errors import WrongChainNetwork
from satvault.backends.networks import NetworkGuard
from satvault.kernel.clock import FakeClock
from tests.backends.conftest import Node


async def test_a_node_of_another_network_is_refused_until_it_is_on_ours(node: Node) -> None:
    guard = NetworkGuard(node.backend, "regtest")
    node.claim_chain("signet")
    with pytest.raises(WrongChainNetwork) as info:
        await guard.check()
    assert (info.value.found, info.value.configured) == ("signet", "regtest")
    assert str(info.value) == "the chain node is on signet, satvault is configured for regtest"
    with pytest.raises(WrongChainNetwork):  # asked again, refused again
        await guard.check()
    node.claim_chain("regtest")
    await guard.check()
    assert guard.confirmed


async def test_asked_once_then_again_only_after_the_node_was_unreachable(node: Node) -> None:
    guard = NetworkGuard(node.backend, "regtest")
    await guard.check()
    node.claim_chain("main")
    await guard.check()  # known to be on regtest: not asked on every tick
    guard.forget()  # the node could not be reached: it may be another node now
    with pytest.raises(WrongChainNetwork):
        await guard.check()


async def test_asked_again_once_the_recheck_interval_passed(node: Node,
                                                            clock: FakeClock) -> None:
    """A node swapped for one of another network on the same URL, without a single call
    failing in between, is noticed at the next question: at most ``recheck_seconds`` later."""
    guard = NetworkGuard(node.backend, "regtest", recheck_seconds=300)
    await guard.check()
    node.claim_chain("signet")
    clock.advance(299)
    await guard.check()  # within the interval: one question per interval, not per tick
    clock.advance(2)
    with pytest.raises(WrongChainNetwork) as info:
        await guard.check()
    assert info.value.found == "signet" and not guard.confirmed
    with pytest.raises(WrongChainNetwork):  # refused at every check until it is ours again
        await guard.check()
    node.claim_chain("regtest")
    await guard.check()  # asked at once, not an interval later
    assert guard.confirmed
    node.claim_chain("main")
    clock.advance(299)  # the interval starts again from the last answer
    await guard.check()
    clock.advance(2)
    with pytest.raises(WrongChainNetwork):
        await guard.check()


class _Plugin:
    """A chain backend that cannot say which network its node is on (no ``sync_info``)."""

    name = "plugin"


async def test_a_backend_that_cannot_tell_is_trusted() -> None:
    guard = NetworkGuard(_Plugin(), "mainnet")  # type: ignore[arg-type]
    await guard.check()
    assert guard.confirmed


def test_every_nodes_name_for_its_network_and_an_unknown_one_kept() -> None:
    """Core's, LND's and Core Lightning's names map to ours; an unknown name (the Lightning
    adapters read it as regtest before) stays as it is, so it matches no configured network."""
    from satvault.backends.networks import network_of_chain

    assert {n: network_of_chain(n) for n in ("main", "mainnet", "bitcoin", "test", "testnet3",
                                             "testnet4", "signet", "regtest", "simnet")} == {
        "main": "mainnet", "mainnet": "mainnet", "bitcoin": "mainnet", "test": "testnet",
        "testnet3": "testnet", "testnet4": "testnet", "signet": "signet", "regtest": "regtest",
        "simnet": "regtest"}
    assert network_of_chain("liquidv1") == "liquidv1" and network_of_chain("") == ""
