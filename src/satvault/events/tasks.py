"""The webhook worker: a :class:`satvault.workers.Worker` around
:meth:`WebhookDispatcher.step`, woken as soon as a transaction that queued webhook deliveries
(or asked for a redelivery) commits in this process; other processes' deliveries are found at
the next tick. Events no webhook subscribed to do not wake it: under load that would be one
scheduling query per commit for nothing."""

from __future__ import annotations

from satvault.events.delivery import WebhookDispatcher
from satvault.events.outbox import notifier
from satvault.workers import Worker

__all__ = ["WebhookWorker", "webhook_worker"]


class WebhookWorker(Worker):
    def __init__(self, dispatcher: WebhookDispatcher, interval: float) -> None:
        super().__init__("webhooks", interval, dispatcher.step)
        self.dispatcher = dispatcher
        self._unsubscribe = notifier.subscribe(self.wake.set, deliveries_only=True)

    async def stop(self) -> None:
        self._unsubscribe()
        await super().stop()
        await self.dispatcher.aclose()


def webhook_worker(dispatcher: WebhookDispatcher, interval: float = 2.0) -> WebhookWorker:
    return WebhookWorker(dispatcher, interval)
