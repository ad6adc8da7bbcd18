"""``GET /metrics``'s body: the event metrics (:mod:`satvault.telemetry`, this process's or,
with ``PROMETHEUS_MULTIPROC_DIR`` set, every process's added up) and the state of the world
read at the scrape (:mod:`satvault.metrics.state`), in Prometheus' text format."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.lightning import LightningBackend
from satvault.metrics.state import families, gather
from satvault.telemetry import EventCollector

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Fixed(Collector):
    """Metric families computed before the exposition (the scrape's async queries)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return iter(self._metrics)


async def render(sessions: async_sessionmaker[AsyncSession], *,
                 backend: ChainBackend | None = None,
                 lightning: LightningBackend | None = None) -> bytes:
    snapshot = await gather(sessions, backend=backend, lightning=lightning)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EventCollector())
    registry.register(_Fixed(families(snapshot)))
    return generate_latest(registry)
