"""A gateway node: the one composition root. ``Node`` builds every component from ``Settings``,
each with its dependencies passed in, owns their lifecycle (``start``, ``drain``, ``close``),
and ``build_app`` serves them: ``/ws``, the admin API, ``/admin/broadcast``, ``/healthz``,
``/readyz`` and ``/metrics``. No other module imports this one.

Shutdown (SIGTERM) drains (``sessions.Registry.drain``): readiness fails at once (``/readyz``
answers 503 while the listener stays open), new sessions are closed with 3000 and new commands
refused with ``draining``, in-flight commands finish, live sessions are told to reconnect
elsewhere with close code 3000, and only then does aiohttp's own shutdown run; the process
exits within ``drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import (
    adjustments,
    aggregates,
    auth,
    birthdays,
    commands,
    offers,
    purchases,
    reorder,
    rewards,
    sessions,
    webhooks,
)
from gateway.adjustments import AdjustmentRows, Adjustments
from gateway.aggregates import AggregateRows, Aggregates
from gateway.api import AdminApi, AdminServices, Broadcasts, ReorderLinks
from gateway.birthdays import BirthdayRows, Birthdays
from gateway.catalogue import Catalogue
from gateway.collector import CollectorPolicy
from gateway.expiry import PointsExpiry
from gateway.fanout import Feeds, LocalBroadcast, MemberEvents, PresenceBook, Publisher
from gateway.ledger import Ledger, OutboxRelay, Reads, Sweeper, Versions
from gateway.members import ContactProofs, Members, Merger, Owners, Privacy, Profiles
from gateway.metrics import Metrics
from gateway.notify import CodeSenders, HttpSms, Smtp
from gateway.offers import OfferRows, Offers
from gateway.ops import Ops, Readiness
from gateway.programme import ProgrammeConfig, Programmes
from gateway.purchases import PurchaseRows, Returns, Sales
from gateway.reorder import PredictionRows, Reorder
from gateway.rewards import CodeRows, Rewards
from gateway.segments import (
    SegmentRows,
    Segments,
    SegmentStream,
    SegmentTriggers,
)
from gateway.sessions import Endpoint, Heartbeat, Registry, Router, Scope, Session
from gateway.settings import Settings
from gateway.store.db import new_pool, open_pool
from gateway.store.keys import CACHE_EPOCH, Keys
from gateway.store.redis import REDIS_ERRORS, CacheEpoch, cache_risks, create_client
from gateway.tiers import Tiers
from gateway.web import Pages
from gateway.webhooks import Deliverer, EventRecorder, Webhooks

log = logging.getLogger(__name__)

#: Every package's rows that ride on ledger operations (``ledger.AttachmentKind``): a sale's
#: history, a return's state, a granted code, a birthday grant, the purchase aggregates, an
#: adjustment, a reorder's reward.
ATTACHMENTS = (
    *purchases.ATTACHMENTS,
    *rewards.ATTACHMENTS,
    *birthdays.ATTACHMENTS,
    *offers.ATTACHMENTS,
    *adjustments.ATTACHMENTS,
    *aggregates.ATTACHMENTS,
    *reorder.ATTACHMENTS,
)
#: The statements other packages run over every batch's entries (``ledger.EntryTap``): the
#: webhooks' points.changed events.
TAPS = webhooks.TAPS


class Node:
    """Every long-lived component of one gateway process, built once, in dependency order."""

    def __init__(self, settings: Settings, redis_prefix: str | None = None) -> None:
        s = settings
        self.settings = settings
        cluster = s.store.redis_cluster
        self.keys = Keys(
            settings.store.redis_prefix if redis_prefix is None else redis_prefix, cluster=cluster
        )
        self.metrics = Metrics()
        self.collector = CollectorPolicy(s.server.gc_freeze_seconds, s.server.gc_full_seconds)
        self.pool = new_pool(s.store.database_url, s.store.db_pool_size, s.store.command_timeout)
        self.redis = create_client(s.store.redis_url, cluster=cluster)
        #: The cache epoch, shared by the node's cache writers (``store/keys.py``).
        self.epoch = CacheEpoch(per_slot=cluster)
        self._ledger_and_fanout()
        self._domain()
        self._transports()
        self.started_at = time.time()
        self._background: asyncio.Task[None] | None = None

    def _ledger_and_fanout(self) -> None:
        """The ledger and the fan-out it tells."""
        s, pool, redis, keys = self.settings, self.pool, self.redis, self.keys
        versions = Versions()
        self.reads = reads = Reads(pool, redis, keys, self.epoch, versions)
        self.publisher = publisher = Publisher(redis, keys, epoch=self.epoch)
        self.presence = presence = PresenceBook(
            redis,
            keys,
            s.server.node_id,
            limit=s.session.max_sessions_per_member,
            interval=s.session.heartbeat,
            ttl=3 * s.session.heartbeat,
        )
        self.registry = registry = Registry(left=presence.leave)
        self.broadcast = broadcast = LocalBroadcast(keys, registry.of_merchant, redis)
        self.feeds = feeds = Feeds(
            redis,
            keys,
            reads,
            s.session.max_recovery,
            presence=presence.online,
            on_broadcast=broadcast.deliver,
            on_reconnect=broadcast.replay,
            shards=s.store.redis_shards,
        )
        self.relay = relay = OutboxRelay(
            pool, publisher, s.ledger.relay_interval, s.ledger.relay_min_age
        )
        self.ledger = ledger = Ledger(
            s.store.database_url,
            s.ledger,
            publisher,
            deliver=feeds.deliver_committed,
            published=relay,
            versions=versions,
            attachments=ATTACHMENTS,
            taps=TAPS,
            on_batch=self.metrics.ledger_batch,
        )
        self.sweeper = Sweeper(pool, ledger, s.ledger.sweep_interval)
        self.events = MemberEvents(redis, keys, lambda: registry.sessions)
        self.heartbeat = Heartbeat(lambda: registry.sessions, s.session.heartbeat)

    def _domain(self) -> None:
        """The domain services, each over what it needs."""
        pool, ledger = self.pool, self.ledger
        #: Where the domain writes its webhook events, in the transactions of its changes.
        hooks = EventRecorder()
        self.segments = segments = Segments(pool, (SegmentStream(self.redis, self.keys),))
        # tier changes, profile edits and merges move segments: their events pass by them
        self.segment_triggers = events = SegmentTriggers(self.events, segments)
        self.programmes = programmes = Programmes(pool)
        self.owners = Owners(pool)
        self.members = members = Members(
            pool, programmes, self.reads, self.settings.auth.jwt_secret, hooks
        )
        self.catalogue = catalogue = Catalogue(
            pool, self.settings.store.database_url, self.settings.server.catalogue_max_bytes
        )
        self.aggregates = facts = Aggregates(pool)
        self.offers = Offers(pool, segments, events)
        self.sales = Sales(pool, ledger, programmes, members, catalogue, facts, self.offers)
        self.returns = Returns(pool, ledger, facts)
        self.tiers = tiers = Tiers(pool, programmes, members, events, hooks)
        self.rewards = Rewards(pool, ledger, programmes, members, events, hooks)
        self.profiles = profiles = Profiles(pool, events)
        n = self.settings.notify
        smtp = Smtp(n.smtp_url, n.mail_from) if n.smtp_url else None
        sms = HttpSms(n.sms_url, n.sms_token) if n.sms_url else None
        senders = CodeSenders(smtp, sms)
        self.contacts = ContactProofs(
            pool, programmes, profiles, senders, self.settings.auth.jwt_secret
        )
        member_rows = (
            PurchaseRows(pool),
            CodeRows(pool),
            BirthdayRows(pool),
            AdjustmentRows(pool),
            AggregateRows(pool),
            SegmentRows(pool),
            PredictionRows(pool),
            OfferRows(pool),
        )
        self.merger = Merger(pool, ledger, member_rows, tiers, events, hooks)
        self.privacy = Privacy(pool, members, self.profiles, member_rows, hooks)
        self.expiry = PointsExpiry(pool, ledger)
        self.adjustments = Adjustments(pool, ledger, members)
        self.birthdays = Birthdays(
            pool, ledger, programmes, events, self.settings.server.birthday_seconds
        )
        self.reorder = Reorder(
            pool,
            catalogue,
            profiles,
            ledger,
            programmes,
            events,
            secret=self.settings.auth.jwt_secret,
            public_url=self.settings.server.public_url,
            smtp=smtp,
            sms=sms,
            interval=self.settings.server.reorder_seconds,
        )
        self.webhooks = Webhooks(pool, self.settings.webhooks)
        self.deliverer = Deliverer(
            self.settings.store.database_url,
            self.settings.webhooks,
            self.settings.store.command_timeout,
        )

    def _admin_services(self) -> AdminServices:
        """The domain services the admin API calls."""
        return AdminServices(
            config=ProgrammeConfig(self.pool, self.programmes),
            members=self.members,
            sales=self.sales,
            tiers=self.tiers,
            rewards=self.rewards,
            merger=self.merger,
            privacy=self.privacy,
            expiry=self.expiry,
            birthdays=self.birthdays,
            catalogue=self.catalogue,
            reorder=self.reorder,
            adjustments=self.adjustments,
            webhooks=self.webhooks,
            segments=self.segments,
            offers=self.offers,
        )

    def _transports(self) -> None:
        """The websocket endpoint and its commands, the admin API, the ops endpoints."""
        s = self.settings
        verify = functools.partial(
            auth.verify, s.auth.jwt_secret, leeway=s.auth.leeway, keys=s.auth.merchant_keys
        )
        scope = Scope(self.owners.of)
        self.router = router = Router()
        subscriptions = sessions.register(
            router, self.feeds, scope, verify, s.session.max_subscriptions
        )
        commands.register(
            router,
            commands.Points(self.ledger, self.reads, scope, self.returns, self.rewards),
            commands.Loyalty(
                scope,
                self.members,
                self.sales,
                self.returns,
                self.tiers,
                self.rewards,
                self.programmes,
                subscriptions,
                self.aggregates,
                self.segments,
                self.offers,
            ),
            commands.Wallet(
                scope,
                self.members,
                self.profiles,
                self.contacts,
                self.sales,
                self.tiers,
                self.rewards,
                self.programmes,
                subscriptions,
                self.events,
                self.offers,
            ),
        )
        self.endpoint = Endpoint(
            s.session,
            s.server.node_id,
            self.registry,
            router,
            self.heartbeat,
            self.presence,
            self.feeds,
            verify,
            self.owners.of,
            self.metrics,
            s.server.drain_seconds,
        )
        self.admin = AdminApi(
            self._admin_services(),
            s.auth.admin_token,
            s.auth.merchant_keys,
        )
        self.broadcasts = Broadcasts(
            self.redis, self.keys, s.auth.admin_token, s.auth.merchant_keys
        )
        registry = self.registry
        self.readiness = Readiness(self.pool, self.redis, lambda: registry.draining, self.metrics)
        self.ops = Ops(
            s.server.node_id, lambda: len(registry), self.readiness, self.metrics, self._gauges
        )

    # ---------------------------------------------------------------- what tests read
    @property
    def sessions(self) -> set[Session]:
        return self.registry.sessions

    @property
    def pending(self) -> int:
        return self.registry.pending

    @property
    def draining(self) -> bool:
        return self.registry.draining

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.metrics.watch_gc()
        await open_pool(self.pool)
        for risk in await cache_risks(self.redis):
            log.warning("Redis configuration: %s", risk)
        with contextlib.suppress(*REDIS_ERRORS):  # else learned from the first write's reply
            if not self.keys.cluster:  # on a cluster, each slot's from its first write
                script = self.redis.register_script(CACHE_EPOCH)
                self.epoch.learn(await script(keys=[self.keys.epoch()]))
        await self.ledger.start()
        await self.feeds.start()
        self.presence.start(self.registry.members, self.feeds.presence_watched)
        await self.events.start()
        self.expiry.start()
        self.birthdays.start()
        self.reorder.start()
        await self.deliverer.start()
        self.relay.start()
        self.sweeper.start()
        self.heartbeat.start()
        self.collector.start()
        self.readiness.start()

    async def drain(self) -> None:
        """Fail readiness, finish in-flight commands, close sessions with 3000."""
        self.readiness.draining()
        await self.registry.drain(self.settings.server.drain_seconds)

    async def close(self) -> None:
        self.metrics.unwatch_gc()
        await self.readiness.close()
        await self.collector.close()
        await self.heartbeat.close()
        await self.expiry.close()
        await self.birthdays.close()
        await self.reorder.close()
        with contextlib.suppress(Exception):
            await self.deliverer.close()
        await self.offers.close()
        await self.segments.close()
        # The feeds close before the ledger: a batch still finishing delivers to nobody.
        for component in (
            self.events,
            self.presence,
            self.broadcast,
            self.sweeper,
            self.relay,
            self.feeds,
            self.ledger,
        ):
            with contextlib.suppress(Exception):
                await component.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        try:
            await asyncio.wait_for(self.pool.close(), 2)
        except asyncio.CancelledError:
            self.pool.terminate()
            raise
        except Exception:  # a server that does not answer: do not wait on its goodbyes
            self.pool.terminate()

    def install_sigterm(self) -> None:
        """Take over SIGTERM from aiohttp's runner (if it installed one): drain first, while
        the listener stays open to answer ``/readyz`` with 503, then let aiohttp shut down."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            return  # not run by web.run_app (e.g. embedded in tests): leave signals alone
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            if not self.draining:
                self._background = loop.create_task(self._drain_then_exit())

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    async def _drain_then_exit(self) -> None:
        log.warning("SIGTERM: draining %d sessions", len(self.registry))
        try:
            await self.drain()
        finally:
            asyncio.get_running_loop().call_soon(_graceful_exit)

    def _gauges(self) -> None:
        """The gauges read at scrape time."""
        m = self.metrics
        m.connections.set(len(self.registry))
        m.sessions.set(len(self.registry) - self.registry.pending)
        m.feeds.set(len(self.feeds))
        m.outbox.set(self.relay.pending)
        m.totals.values.update(
            gateway_ledger_batches=self.ledger.stats.batches,
            gateway_ledger_operations=self.ledger.stats.ops,
            gateway_ledger_shed=self.ledger.stats.shed,
            gateway_gc_reclaimed_objects=self.collector.reclaimed,
        )


NODE: web.AppKey[Node] = web.AppKey("node", Node)


def _graceful_exit() -> None:
    raise web.GracefulExit()


def build_app(settings: Settings, redis_prefix: str | None = None) -> web.Application:
    """The node's web application; build it inside the event loop that will serve it."""
    app = web.Application()
    node = Node(settings, redis_prefix)
    app[NODE] = node
    app.router.add_get("/ws", node.endpoint.handle)
    app.router.add_post("/admin/broadcast", node.broadcasts.post)
    node.ops.setup(app)
    node.admin.setup(app)
    ReorderLinks(node.reorder.outbox, node.reorder.carts).setup(app)
    Pages(settings).setup(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        node.install_sigterm()
        yield
        await node.drain()
        await node.close()

    app.cleanup_ctx.append(lifecycle)

    async def on_shutdown(app: web.Application) -> None:
        await node.drain()

    app.on_shutdown.append(on_shutdown)
    return app
