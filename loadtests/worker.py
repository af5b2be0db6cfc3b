"""One load-generator process: its share of terminals, watching sessions and members.

The parent (``loadtests.runner``) splits the members between workers; each worker runs the POS
flows for its own members and holds the app sessions watching them, so a push can be matched
to the reply that caused it inside one process, by ``(member, version)``.

Conversation with the parent over a pipe (tuples, first item the kind):

* worker -> parent: ``ready`` (connections made), ``progress`` (once a second), ``result``
  (histograms and observations), ``error`` (setup failed), ``closed``;
* parent -> worker: ``start`` (monotonic start time), ``finish`` (stop sending, settle,
  report), ``stop`` (close every session and exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
import re
import resource
import threading
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from loadtests.arrival import Stage, paced
from loadtests.client import Link, LinkClosed, connectors
from loadtests.hist import Histograms
from loadtests.matching import PushMatcher
from loadtests.seed import app_token, card_for, pos_token
from protocol.client import Changed, Event, Failed, Gap, Reply, Resync, Stale
from protocol.messages import (
    Balance,
    Commit,
    GetBalance,
    HoldState,
    Release,
    Reserve,
    Sale,
    SaleLine,
    SaleReceipt,
    Subscribe,
    Subscribed,
)
from protocol.wallet import GetWallet

try:  # member lookup by card, where the protocol has it; else the flow reads the balance
    from protocol.loyalty import Lookup, Member
except ImportError:  # pragma: no cover - protocol without the loyalty commands
    Lookup = Member = None  # type: ignore[assignment,misc]

_MARK = re.compile(rb"lt-bc-[0-9a-z]+-\d+")
CHANGING = ("reserve", "commit", "release", "sale")


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Watcher:
    __slots__ = ("busy", "gaps_open", "idx", "last", "link", "member", "since_gap")

    def __init__(self, idx: int, member: str, link: Link) -> None:
        self.idx = idx
        self.member = member
        self.link = link
        self.last: tuple[int, int, int, int] = (0, 0, 0, -1)
        self.busy = False
        self.since_gap: int | None = None
        #: Gaps seen and not yet answered by a subscribe with ``since`` (a gap fill, or the
        #: resume of a reconnect that was under way); each is counted once, by that answer.
        self.gaps_open = 0


class Worker:
    def __init__(self, spec: dict[str, Any], conn: Connection) -> None:
        self.spec = spec
        self.cfg: dict[str, Any] = spec["config"]
        self.conn = conn
        self.idx: int = spec["index"]
        self.count: int = spec["count"]
        self.run: str = spec["run"]
        self.merchant: str = spec["merchant"]
        self.members: list[str] = spec["members"]
        self.secret: str = spec["secret"]
        self.urls: list[str] = self.cfg["url"]
        self.hist = Histograms()
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.watchers: list[Watcher] = []
        self.terminals: list[Link] = []
        self.https: list[aiohttp.ClientSession] = []
        self.inflight = 0
        self.bc_receipts: dict[str, list[int]] = {}
        self.recent: dict[str, list[int]] = {"flow": [], "push": []}
        self.matcher = PushMatcher(self.hist, self.counters, self.recent["push"])
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.ops = itertools.count(1)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.member_terminal: dict[str, Link] = {}
        #: An app session of each member (the ``wallet`` step goes through it).
        self.member_app: dict[str, Link] = {}
        self.rng = random.Random(self.idx)
        self.record_from = 0
        self.send_lock = threading.Lock()
        self.by_link: dict[int, Watcher] = {}

    # ------------------------------------------------------------------ plumbing
    def send(self, *msg: Any) -> None:
        with self.send_lock, contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(msg)

    def _read_pipe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: blocking reads of the parent's messages into the inbox. The pipe stays in
        blocking mode so that large ``send``s (the result) are written whole."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                msg = ("stop",)
            try:
                loop.call_soon_threadsafe(self.inbox.put_nowait, msg)
            except RuntimeError:  # the loop is closed
                return
            if msg[0] == "stop":
                return

    async def expect(self, *kinds: str) -> tuple[Any, ...]:
        while True:
            msg = await self.inbox.get()
            if msg[0] in kinds or msg[0] == "stop":
                return msg

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def http_for(self, n: int) -> aiohttp.ClientSession:
        return self.https[n % len(self.https)]

    # ------------------------------------------------------------------ main
    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_pipe, args=(loop,), daemon=True, name="pipe").start()
        self.https = connectors(self.cfg.get("source_ips"))
        try:
            try:
                await self.setup()
            except Exception as exc:
                self.send("error", self.idx, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                return
            # Thousands of long-lived links: keep the collector from walking them during the
            # measurement (its pauses would show up as gateway latency). As in the gateway
            # (gateway/collector.py): collect, then freeze the survivors.
            gc.collect()
            gc.freeze()
            self.send("ready", self.idx, self.ready_info())
            msg = await self.expect("start")
            if msg[0] == "start":
                await self.load(msg[1])
                self.send("drained", self.idx, {"abandoned": self.counters["abandoned"]})
                # settle rounds: the parent sends the ledger's versions; wait (bounded) until
                # every session saw them, report; the parent may ask again if the ledger moved
                while True:
                    msg = await self.expect("targets")
                    if msg[0] != "targets":
                        break
                    await self.settle(msg[1], time.monotonic() + self.cfg["quiesce"])
                    self.send("result", self.idx, self.result())
        finally:
            await self.teardown()
            self.send("closed", self.idx)

    def ready_info(self) -> dict[str, Any]:
        return {
            "watchers": sum(1 for w in self.watchers if w.link.open),
            "terminals": sum(1 for t in self.terminals if t.open),
            "connect_errors": dict(self.errors),
            "pid": os.getpid(),
            "lookup": "lookup" if getattr(self, "use_lookup", False) else "balance",
        }

    # ------------------------------------------------------------------ setup
    async def setup(self) -> None:
        cfg = self.cfg
        n_urls = len(self.urls)
        # terminals: spread over nodes; member i's flows go through terminal i % T
        for t in range(self.spec["terminals"]):
            name = f"w{self.idx}t{t}"
            link = Link(self.http_for(t), self.urls[(self.idx + t) % n_urls], name, self.on_events)
            token = pos_token(self.secret, self.merchant, f"store{self.idx}", name)
            await link.connect(token, cfg["timeout"])
            self.terminals.append(link)
        self.use_lookup = Lookup is not None and bool(self.terminals) and "lookup" in cfg["steps"]
        if self.use_lookup:  # does this deployment know `lookup`? (else the flow reads the balance)
            probe = Lookup(id=self.terminals[0].proto.next_id(), card=card_for(self.members[0]))
            ev, _ = await self.terminals[0].request(probe, cfg["timeout"])
            self.use_lookup = not (isinstance(ev, Failed) and ev.error.code == "unknown_type")
        node_of_terminal = {id(t): self.urls.index(t.url[:-3]) for t in self.terminals}
        for i, m in enumerate(self.members):
            if self.terminals:
                self.member_terminal[m] = self.terminals[i % len(self.terminals)]
        # watchers: session k watches member k % M of this worker, on a node other than the
        # one its member's terminal is on whenever there is more than one node
        sem = asyncio.Semaphore(max(1, cfg["connect_concurrency"]))
        tokens: dict[str, str] = {}
        plan = []
        for k in range(self.spec["sessions"]):
            member = self.members[k % len(self.members)]
            rank = k // len(self.members)
            if self.terminals and n_urls > 1:  # watch from another node than the POS's
                home = node_of_terminal.get(id(self.member_terminal.get(member)), 0)
                node = (home + 1 + rank % (n_urls - 1)) % n_urls
            else:
                node = k % n_urls
            plan.append((k, member, node))

        async def open_one(k: int, member: str, node: int) -> None:
            async with sem:
                token = tokens.get(member) or tokens.setdefault(
                    member, app_token(self.secret, self.merchant, member)
                )
                link = Link(
                    self.http_for(k),
                    self.urls[node],
                    f"w{self.idx}s{k}",
                    self.on_events,
                    self.on_raw,
                    self.on_close,
                )
                w = Watcher(k, member, link)
                self.by_link[id(link)] = w
                started = time.monotonic_ns()
                try:
                    await link.connect(token, cfg["timeout"])
                    await self.subscribe(w, None, started, "connect")
                except (LinkClosed, TimeoutError, aiohttp.ClientError, OSError) as exc:
                    self.errors[f"connect:{_reason(exc)}"] += 1
                    self.by_link.pop(id(link), None)
                    await link.close()
                    return
                self.watchers.append(w)
                self.member_app.setdefault(member, link)

        await asyncio.gather(*(open_one(*p) for p in plan))

    async def subscribe(self, w: Watcher, since: int | None, started: int, metric: str) -> None:
        frame = Subscribe(id=w.link.proto.next_id(), member=w.member, since=since)
        ev, t = await w.link.request(frame, self.cfg["timeout"])
        if isinstance(ev, Failed):
            raise LinkClosed(f"subscribe refused: {ev.error.code}")
        self.hist.record_ns(metric, t - started)

    # ------------------------------------------------------------------ events
    def on_events(self, link: Link, events: list[Event], now: int) -> None:
        w = self.by_link.get(id(link))
        replayed = False
        for ev in events:
            if isinstance(ev, Reply):
                if isinstance(ev.data, Subscribed):
                    replayed = True
                    if w is not None:
                        self._on_subscribed(w, ev)
            elif isinstance(ev, Changed):
                c = ev.change
                if w is None:
                    continue
                if c.version > w.last[3]:
                    w.last = (c.posted, c.held, c.available, c.version)
                if replayed:
                    self.counters["pushes_replayed"] += 1
                    continue
                self.counters["pushes"] += 1
                self.matcher.push((c.member, c.version), now)
            elif isinstance(ev, Gap):
                self.counters["gaps"] += 1
                if w is not None:
                    w.gaps_open += 1
                    if not w.busy:
                        self.spawn(self._fill_gap(w, ev.expected - 1))
            elif isinstance(ev, Resync):
                # Counted here only when the server pushed it; a subscribe answered with
                # recovered=false (also a Resync event) is counted by its own reply.
                if ev.reason != "not_recovered":
                    self.counters["resyncs"] += 1
                if w is not None and ev.balance.version >= w.last[3]:
                    b = ev.balance
                    w.last = (b.posted, b.held, b.available, b.version)
            elif isinstance(ev, Failed):
                self.errors[f"unmatched:{ev.error.code}"] += 1
            elif isinstance(ev, Stale) and not replayed:
                # A push of a change already seen (or older): a subscribe's replayed changes
                # overlap the pushes around a gap fill by design, so only pushes count.
                self.counters["pushes_duplicate"] += 1

    def _on_subscribed(self, w: Watcher, ev: Reply) -> None:
        data = ev.data
        assert isinstance(data, Subscribed)
        b = data.balance
        if b.version >= w.last[3]:
            w.last = (b.posted, b.held, b.available, b.version)
        request = ev.request
        since = request.since if isinstance(request, Subscribe) else None
        if since is None:
            return
        got = [c.version for c in data.missed]
        complete = got == list(range(since + 1, b.version + 1))  # every version it missed
        if w.gaps_open:  # were the missing versions returned, or the gap said out loud?
            if not data.recovered:
                self.counters["gaps_resynced"] += w.gaps_open
            elif complete:
                self.counters["gaps_recovered"] += w.gaps_open
            else:  # "recovered" without the versions it missed: a gap the verdict fails on
                self.counters["gaps_broken"] += w.gaps_open
            w.gaps_open = 0
        if w.since_gap is not None:  # a gap fill, not a resume
            w.since_gap = None
            return
        self.counters["resumes"] += 1
        if not data.recovered:
            self.counters["resumes_not_recovered"] += 1
            return
        if not complete:
            self.counters["resumes_broken"] += 1
        else:
            self.counters["resumes_recovered"] += 1
            self.counters["resume_missed_changes"] += len(got)

    async def _fill_gap(self, w: Watcher, since: int) -> None:
        w.busy = True
        w.since_gap = since
        try:
            await self.subscribe(w, since, time.monotonic_ns(), "resubscribe")
        except (LinkClosed, TimeoutError):
            self._error("gap_fill", "failed")  # the gap stays open: the verdict fails on it
            w.since_gap = None
        finally:
            w.busy = False

    def on_raw(self, link: Link, raw: bytes, now: int) -> None:
        for m in set(_MARK.findall(raw)):
            self.bc_receipts.setdefault(m.decode(), []).append(now)

    def on_close(self, link: Link, code: int | None) -> None:
        w = self.by_link.get(id(link))
        if w is not None and not w.busy and not getattr(self, "closing", False):
            self.counters["server_closed"] += 1
            self.errors[f"close:{code}"] += 1

    # ------------------------------------------------------------------ load
    async def load(self, t0: int) -> None:
        cfg = self.cfg
        self.record_from = t0 + int(cfg.get("warmup", 0.0) * 1e9)
        self.matcher.record_from = self.record_from
        stages = [Stage(*s) for s in self.spec["stages"]]
        pacers = []
        through = self.terminals or (self.member_app and cfg["steps"] == ["wallet"])
        if cfg["steps"] and through and any(s.start or s.end for s in stages):
            pacers.append(self.spawn(self.pace_flows(t0, stages)))
        if cfg["churn_rate"] > 0 and self.watchers:
            dur = sum(s.duration for s in stages)
            churn = [Stage(dur, cfg["churn_rate"], cfg["churn_rate"])]
            pacers.append(self.spawn(self.pace_churn(t0, churn)))
        reporter = self.spawn(self.report_progress(t0))
        await self.expect("finish")
        for p in pacers:
            p.cancel()
        await asyncio.gather(*pacers, return_exceptions=True)
        # let flows in flight end (each is bounded by the command timeout)
        deadline = time.monotonic() + cfg["timeout"] + 2
        while self.inflight and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        self.counters["abandoned"] += self.inflight
        reporter.cancel()
        with contextlib.suppress(BaseException):
            await reporter

    async def settle(self, targets: dict[str, int], deadline: float) -> None:
        """Wait (bounded) until every open watcher saw its member's version in ``targets`` (the
        ledger's, read after the load stopped) or, failing that, the last one a reply reported."""
        while time.monotonic() < deadline:
            replied = self.matcher.last_replies
            behind = [
                w
                for w in self.watchers
                if w.link.open
                and w.last[3] < targets.get(w.member, replied.get(w.member, (0, 0, 0, -1))[3])
            ]
            if not behind and not any(w.busy for w in self.watchers):
                return
            await asyncio.sleep(0.05)
        self.counters["settle_timeout"] += 1

    async def pace_flows(self, t0: int, stages: list[Stage]) -> None:
        late_ns = int(self.cfg["late_ms"] * 1e6)
        cap = self.cfg["max_inflight"]
        members = self.members
        async for n, due, now in paced(stages, t0, 1 / self.count, self.idx / self.count):
            if now - due > late_ns:
                self.counters["late"] += 1
            if self.inflight >= cap:
                self.counters["dropped"] += 1
                continue
            self.counters["scheduled"] += 1
            member = members[(n + 1) % len(members)]
            self.inflight += 1
            self.spawn(self.flow(due, member))

    def record(self, name: str, ns: int, due: int) -> None:
        if due >= self.record_from:
            self.hist.record_ns(name, ns)

    async def flow(self, due: int, member: str) -> None:
        cfg = self.cfg
        link = self.member_terminal.get(member) or self.member_app[member]
        proto = link.proto
        # From the scheduled time, or from the send if the pacer's sleep ended early (uvloop's
        # timers tick in whole milliseconds): never from before the command left.
        start = prev = min(due, time.monotonic_ns())
        hold = ""
        try:
            for step in cfg["steps"]:
                op = f"{self.run}-{self.idx}-{next(self.ops)}"
                name = step
                if step == "wallet":
                    link = self.member_app[member]
                    frame: Any = GetWallet(id=link.proto.next_id(), member=member)
                elif step == "lookup" and self.use_lookup:
                    frame = Lookup(id=proto.next_id(), card=card_for(member))
                elif step == "lookup":
                    name = "balance"
                    frame = GetBalance(id=proto.next_id(), member=member)
                elif step == "reserve":
                    hold = op
                    frame = Reserve(id=proto.next_id(), op=op, member=member, points=cfg["points"])
                elif step == "commit":
                    if not hold:
                        continue
                    if self.rng.random() < cfg["release_fraction"]:
                        name = "release"
                        frame = Release(id=proto.next_id(), op=op, member=member, hold=hold)
                    else:
                        frame = Commit(id=proto.next_id(), op=op, member=member, hold=hold)
                else:
                    lines = [SaleLine(sku="sku-1", qty=1, price=cfg["sale_total"])]
                    frame = Sale(
                        id=proto.next_id(),
                        op=op,
                        member=member,
                        total=cfg["sale_total"],
                        lines=lines,
                    )
                self.counters["commands_sent"] += 1
                try:
                    ev, t = await link.request(frame, cfg["timeout"])
                except TimeoutError:
                    self.record(name, time.monotonic_ns() - prev, due)
                    self._error(name, "timeout")
                    return
                except LinkClosed:
                    self._error(name, "connection_lost")
                    return
                self.record(name, t - prev, due)
                if isinstance(ev, Failed):
                    self._error(name, ev.error.code)
                    return
                self.counters["commands_ok"] += 1
                data = ev.data if isinstance(ev, Reply) else None
                if isinstance(data, HoldState | SaleReceipt):
                    self.matcher.reply(member, data.balance, t)
                elif isinstance(data, Balance):
                    self.matcher.seen(
                        member, (data.posted, data.held, data.available, data.version)
                    )
                prev = t
            done = time.monotonic_ns()
            self.record("flow", done - start, due)
            rec = self.recent["flow"]
            if len(rec) < 100_000:
                rec.append(done - start)
            self.counters["flows_ok"] += 1
        finally:
            self.inflight -= 1

    def _error(self, step: str, code: str) -> None:
        self.errors[f"{step}:{code}"] += 1
        self.counters["errors_total"] += 1

    async def pace_churn(self, t0: int, stages: list[Stage]) -> None:
        async for _, _, _ in paced(stages, t0, 1 / self.count, self.idx / self.count):
            idle = [
                w for w in self.rng.sample(self.watchers, min(8, len(self.watchers))) if not w.busy
            ]
            if not idle:
                self.counters["churn_skipped"] += 1
                continue
            self.spawn(self.churn(idle[0]))

    async def churn(self, w: Watcher) -> None:
        w.busy = True
        link = w.link
        try:
            await link.close()
            link.proto.connection_lost()
            self.counters["disconnects"] += 1
            await asyncio.sleep(self.cfg["churn_down"])
            self.counters["reconnects_attempted"] += 1
            started = time.monotonic_ns()
            token = app_token(self.secret, self.merchant, w.member)
            try:
                await link.connect(token, self.cfg["timeout"])
                before = set(link.proto.pending)
                frames = link.proto.resume()  # subscribe again from the last version seen
                rids = [rid for rid in link.proto.pending if rid not in before]
                futs = [
                    link.request_sent(rid, data, self.cfg["timeout"])
                    for rid, data in zip(rids, frames, strict=True)
                ]
                results = await asyncio.gather(*futs)
                t = max(t for _, t in results)
                self.hist.record_ns("reconnect", t - started)
                self.counters["reconnects"] += 1
            except (LinkClosed, TimeoutError, aiohttp.ClientError, OSError) as exc:
                self._error("reconnect", _reason(exc))
        finally:
            w.busy = False

    async def report_progress(self, t0: int) -> None:
        while True:
            await asyncio.sleep(1.0)
            snap: dict[str, Any] = dict(self.counters)
            snap["errors_total"] = self.counters["errors_total"]
            snap["inflight"] = self.inflight
            snap["connected"] = sum(1 for w in self.watchers if w.link.open)
            for name, rec in self.recent.items():
                if rec:
                    rec.sort()
                    snap[f"{name}_p99_ms"] = rec[int(len(rec) * 0.99)] / 1e6
                    rec.clear()
            self.send("progress", self.idx, snap)

    def result(self) -> dict[str, Any]:
        bc = {k: v for k, v in self.bc_receipts.items()}
        return {
            "histograms": self.hist.encode(),
            "clamped": self.hist.clamped,
            "counters": dict(self.counters),
            "errors": dict(self.errors),
            "seen": [(w.link.name, w.member, w.last) for w in self.watchers if w.last[3] >= 0],
            "last_replies": self.matcher.last_replies,
            "broadcast": bc,
            "watchers_open": sum(1 for w in self.watchers if w.link.open),
            "unmatched_pushes": self.matcher.unmatched(),
            "undigested_frames": sum(link.undigested for link in self._links()),
            "link_failures": sorted({link.failure for link in self._links() if link.failure})[:5],
        }

    def _links(self) -> list[Link]:
        return [w.link for w in self.watchers] + self.terminals

    async def teardown(self) -> None:
        self.closing = True
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        links = [w.link for w in self.watchers] + self.terminals
        for i in range(0, len(links), 500):
            await asyncio.gather(
                *(link.close(1.0) for link in links[i : i + 500]), return_exceptions=True
            )
        for http in self.https:
            await http.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LinkClosed):
        return str(exc).split(":")[-1].strip() or "closed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"http_{exc.status}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower().replace(" ", "_")
    return type(exc).__name__


def entry(conn: Connection, spec: dict[str, Any]) -> None:
    """Process entry point (multiprocessing, spawn)."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        asyncio.run(Worker(spec, conn).main())
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
