"""Every part of the reorder loops on one node, built from what they need (the composition
root builds this one object): the loops, the predictor, the scheduler, the messages'
dispatcher, the outbox, the cart links, the rewards on reorder and the job that runs them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from gateway.catalogue import Catalogue
from gateway.events import MemberEventSink
from gateway.ledger import Ledger
from gateway.members import Profiles
from gateway.programme import Programmes
from gateway.reorder.carts import Carts
from gateway.reorder.dispatch import Dispatcher
from gateway.reorder.job import REORDER_INTERVAL, ReorderJob, ReorderPass
from gateway.reorder.links import LinkSigner
from gateway.reorder.loops import ReorderLoops, get_loop
from gateway.reorder.outbox import MailSender, Outbox, TextSender
from gateway.reorder.predictions import PredictionRows, Predictor
from gateway.reorder.report import Report, report
from gateway.reorder.rewards import Rewarder
from gateway.reorder.schedule import Scheduler


class Reorder:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        catalogue: Catalogue,
        profiles: Profiles,
        ledger: Ledger,
        programmes: Programmes,
        events: MemberEventSink,
        *,
        secret: str,
        public_url: str,
        smtp: MailSender | None,
        sms: TextSender | None,
        interval: float = REORDER_INTERVAL,
    ) -> None:
        self._pool = pool
        self.links = LinkSigner(secret, public_url)
        self.loops = ReorderLoops(pool, catalogue)
        self.predictor = Predictor(pool)
        self.scheduler = Scheduler(pool)
        self.dispatcher = Dispatcher(pool, catalogue, self.links)
        self.outbox = Outbox(pool, profiles, self.links, smtp, sms)
        self.carts = Carts(pool, catalogue, self.links)
        self.rewarder = Rewarder(pool, ledger, programmes, events)
        self.rows = PredictionRows(pool)
        self.job = ReorderJob(
            self.predictor, self.scheduler, self.dispatcher, self.outbox, self.rewarder, interval
        )

    async def report(self, merchant: str, loop: str, now: datetime | None = None) -> Report | None:
        """The loop's uplift report (None: no such loop)."""
        found = await get_loop(self._pool, merchant, loop)
        return None if found is None else await report(self._pool, found, now)

    async def run(self, now: datetime | None = None) -> ReorderPass:
        """One pass of everything, as of ``now`` (default: this node's clock)."""
        return await self.job.run(now)

    def start(self) -> None:
        self.job.start()

    async def close(self) -> None:
        await self.job.close()


__all__ = ["Reorder"]
