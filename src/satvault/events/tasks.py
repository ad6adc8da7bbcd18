"""The webhook worker: a :class:`satvault.workers.Worker` around
:meth:`WebhookDispatcher.step`, woken as soon as a transaction that wrote a store's event (its
deliveries are made by the step's fan-out) or asked for a redelivery commits in this process;
other processes' events are found at the next tick. Events of no store (a wallet's balance)
do not wake it. Wake-ups that arrive while a step runs are served by one more step, so under
load the fan-out takes many events at a time."""

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
