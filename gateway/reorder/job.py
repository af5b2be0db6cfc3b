"""The reorder job on one node: every ``interval`` seconds (jittered; 0: only on demand) the
predictions of the members whose purchases changed, the rewards of the reorders they saw, the
scheduler's pass, the messages due, then the outbox's sends. Nothing in it relies on being the only one: every node runs it (see
``predictions``, ``schedule``, ``dispatch`` and ``outbox``)."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime

from gateway.background import stop
from gateway.errors import GatewayError
from gateway.reorder.dispatch import Dispatcher, DispatchPass
from gateway.reorder.outbox import Outbox, OutboxPass
from gateway.reorder.predictions import PredictionPass, Predictor
from gateway.reorder.rewards import Rewarder, RewardPass
from gateway.reorder.schedule import SchedulePass, Scheduler

log = logging.getLogger(__name__)

#: Seconds between passes on each node; ``GATEWAY_REORDER_SECONDS``.
REORDER_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class ReorderPass:
    predictions: PredictionPass
    schedule: SchedulePass
    dispatch: DispatchPass
    outbox: OutboxPass
    rewards: RewardPass


class ReorderJob:
    def __init__(
        self,
        predictor: Predictor,
        scheduler: Scheduler,
        dispatcher: Dispatcher,
        outbox: Outbox,
        rewarder: Rewarder,
        interval: float = REORDER_INTERVAL,
    ) -> None:
        self.predictor = predictor
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.rewarder = rewarder
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run(self, now: datetime | None = None) -> ReorderPass:
        """One pass of each, as of ``now`` (default: this node's clock)."""
        predictions = await self.predictor.run()
        rewards = await self.rewarder.run()
        return ReorderPass(
            predictions,
            await self.scheduler.run(now),
            await self.dispatcher.run(now),
            await self.outbox.run(now),
            rewards,
        )

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="reorder")

    async def close(self) -> None:
        await stop(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval * random.uniform(0.5, 1.0))
            try:
                await self.run()
            except GatewayError as exc:  # PostgreSQL away: the work waits for the next pass
                log.warning("reorder pass failed: %s", exc)
            except Exception:
                log.exception("reorder pass failed")


__all__ = ["REORDER_INTERVAL", "ReorderJob", "ReorderPass"]
