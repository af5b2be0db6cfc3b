"""The Socket.IO peer, measured in the same run as the gateway's push path.

``../shared/anchors.md`` sets the bar for the push path: Socket.IO 4 (Node) with its Redis
adapter. ``peer_socketio/server.js`` is the plainest such server that does what our push path
does for a balance change: a session joins its member's room; a publisher emits ``change`` with
an ack; the server emits the payload to the room (every node, through Redis pub/sub) and acks.

This module starts those Node servers and drives them with the same shape of load as the
bench's push stage (``bench.py``): the same nodes, members, sessions per member, rate, warmup
and generator processes; publishers spread over the nodes, and every session on a node other
than its member's publisher's. The push lag is measured the way ``matching.PushMatcher``
measures ours: receipt minus the receipt of the reply (here the ack) that reported the change.
What the peer lacks (a ledger behind the change, versions, recovery) is not simulated: the
figures say how fast the bare fan-out of a well-known peer is on the same machine, in the same
run.

The client speaks Engine.IO 4 / Socket.IO 5 packets over aiohttp's websocket, the same client
stack the generator uses against the gateway, so both servers are loaded by the same code path
(``_SioLink``). Only the websocket transport is used (no long-polling upgrade), as our clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtests.arrival import Stage, paced, simple_stages
from loadtests.baselines import _recv
from loadtests.hist import Histograms
from loadtests.matching import PushMatcher
from protocol.messages import Balance

PEER_DIR = Path(__file__).with_name("peer_socketio")
#: Socket.IO packet prefixes over Engine.IO 4 (engine type + socket.io type).
_EVENT = "42"
_ACK = "43"


# ----------------------------------------------------------------------------- install


def install(timeout: float = 300.0) -> str | None:
    """``npm ci`` in ``peer_socketio/`` unless its ``node_modules`` matches the lock file.
    Returns why the peer cannot run, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    lock = PEER_DIR / "package-lock.json"
    stamp = PEER_DIR / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return None
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEER_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        return f"npm ci failed: {proc.stderr.strip()[-400:]}"
    return None


# ----------------------------------------------------------------------------- servers


class PeerServers:
    """``count`` Node processes of ``server.js`` over one Redis, channels under ``prefix``."""

    def __init__(self, count: int, redis_url: str, prefix: str) -> None:
        self.count = count
        self.redis_url = redis_url
        self.prefix = prefix
        self.procs: list[asyncio.subprocess.Process] = []
        self.urls: list[str] = []

    async def __aenter__(self) -> PeerServers:
        from loadtests.nodes import free_port

        try:
            for _ in range(self.count):
                port = free_port()
                proc = await asyncio.create_subprocess_exec(
                    "node", str(PEER_DIR / "server.js"), str(port), self.redis_url, self.prefix,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                self.procs.append(proc)
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                if not line.startswith(b"ready"):
                    rest = await asyncio.wait_for(proc.stdout.read(2000), 5)
                    raise RuntimeError(f"peer server did not start: {(line + rest).decode()!r}")
                self.urls.append(f"http://127.0.0.1:{port}")
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# ----------------------------------------------------------------------------- client


class _SioLink:
    """One Socket.IO session over the websocket transport: connect with ``auth``, answer the
    server's pings, hand every event to ``on_event(name, payload, receipt_ns)`` and every ack to
    ``on_ack(ack_id, args, receipt_ns)``."""

    def __init__(
        self,
        on_event: Callable[[str, Any, int], None],
        on_ack: Callable[[int, list[Any], int], None] | None = None,
    ) -> None:
        self.on_event = on_event
        self.on_ack = on_ack
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.next_ack = 0

    async def connect(self, http: aiohttp.ClientSession, url: str, auth: dict[str, Any]) -> None:
        ws = await asyncio.wait_for(
            http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", autoping=True), 10
        )
        self.ws = ws
        opened = await asyncio.wait_for(ws.receive_str(), 10)
        if not opened.startswith("0"):  # Engine.IO "open" with the session's ping settings
            raise ConnectionError(f"expected an Engine.IO open packet, got {opened[:60]!r}")
        await ws.send_str("40" + orjson.dumps(auth).decode())  # Socket.IO CONNECT to "/"
        reply = await asyncio.wait_for(ws.receive_str(), 10)
        if not reply.startswith("40"):
            raise ConnectionError(f"Socket.IO connect refused: {reply[:120]!r}")
        self.reader = asyncio.create_task(self._read(ws))

    async def emit(self, event: str, payload: Any, ack: bool = False) -> int | None:
        assert self.ws is not None
        if not ack:
            await self.ws.send_str(_EVENT + orjson.dumps([event, payload]).decode())
            return None
        self.next_ack += 1
        await self.ws.send_str(
            _EVENT + str(self.next_ack) + orjson.dumps([event, payload]).decode()
        )
        return self.next_ack

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            now = time.monotonic_ns()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            if data.startswith(_EVENT):
                name, payload = orjson.loads(data[2:])[:2]
                self.on_event(name, payload, now)
            elif data.startswith(_ACK) and self.on_ack is not None:
                body = data.index("[")
                self.on_ack(int(data[2:body]), orjson.loads(data[body:]), now)
            elif data == "2":  # Engine.IO ping: answer with pong or the server drops us
                await ws.send_str("3")

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader


def change_payload(member: str, version: int, store: str) -> dict[str, Any]:
    """The peer's balance change: the fields and about the size of our ``balance_changed``."""
    return {
        "type": "balance_changed",
        "member": member,
        "posted": 100_000 + version,
        "held": 0,
        "available": 100_000 + version,
        "version": version,
        "cause": {"kind": "earn", "op": f"{member}-{version}", "channel": "pos", "store": store},
        "at": time.time_ns() // 1_000_000,
    }


class _Worker:
    """One generator process: its members' publishers and sessions, matched in-process."""

    def __init__(self, idx: int, count: int, spec: dict[str, Any], conn: Connection) -> None:
        self.idx = idx
        self.count = count
        self.spec = spec
        self.conn = conn
        self.urls: list[str] = spec["urls"]
        self.members = [f"peer-m{i}" for i in range(idx, spec["members"], count)]
        self.hist = Histograms()
        self.counters: Counter[str] = Counter()
        self.matcher = PushMatcher(self.hist, self.counters, [])
        self.publishers: list[_SioLink] = []
        self.sessions: list[tuple[str, _SioLink]] = []
        self.last_seen: dict[int, int] = {}
        self.received: Counter[tuple[str, int]] = Counter()
        self.acked: list[tuple[str, int]] = []
        self.record_from = 0

    async def main(self) -> None:
        from loadtests.client import connectors

        self.https = connectors(self.spec.get("source_ips"))
        try:
            await self.setup()
            gc.collect()
            gc.freeze()  # as the gateway's generator does (worker.py)
            self.conn.send(("ready", len(self.sessions)))
            t0 = await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)
            await self.load(t0)
            self.conn.send(("result", self.result()))
        finally:
            for link in self.publishers + [s for _, s in self.sessions]:
                await link.close()
            for h in self.https:
                await h.close()

    def home(self, i: int) -> int:
        """The node of member ``i``'s publisher (``i`` is the member's index in this worker)."""
        return (self.idx + i % len(self.publishers)) % len(self.urls)

    async def setup(self) -> None:
        n = len(self.urls)
        for t in range(n):
            link = _SioLink(self._ignore_event)  # its on_ack is set by load()
            node = (self.idx + t) % n
            await link.connect(self.https[t % len(self.https)], self.urls[node], {"pos": t})
            self.publishers.append(link)
        sem = asyncio.Semaphore(200)
        per = self.spec["sessions_per_member"]

        async def open_one(k: int, member: str, node: int) -> None:
            link = _SioLink(lambda name, p, now, k=k: self._on_event(k, name, p, now))
            async with sem:
                try:
                    await link.connect(
                        self.https[k % len(self.https)], self.urls[node], {"m": member}
                    )
                except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError):
                    self.counters["connect_errors"] += 1
                    await link.close()
                    return
            self.sessions.append((member, link))

        plan = []
        for k in range(len(self.members) * per):
            i, rank = k % len(self.members), k // len(self.members)
            node = (self.home(i) + 1 + rank % (n - 1)) % n if n > 1 else 0
            plan.append(open_one(k, self.members[i], node))
        await asyncio.gather(*plan)

    def _ignore_event(self, name: str, payload: Any, now: int) -> None:
        pass

    def _on_event(self, k: int, name: str, payload: Any, now: int) -> None:
        if name != "balance_changed":
            return
        key = (payload["member"], payload["version"])
        self.received[key] += 1
        last = self.last_seen.get(k, 0)
        if key[1] <= last:
            self.counters["out_of_order"] += 1
        elif key[1] > last + 1 and last:
            self.counters["gaps_seen"] += 1
        self.last_seen[k] = max(last, key[1])
        self.counters["pushes"] += 1
        self.matcher.push(key, now)

    async def load(self, t0: int) -> None:
        spec = self.spec
        self.record_from = t0 + int(spec["warmup"] * 1e9)
        self.matcher.record_from = self.record_from
        stages = [Stage(*s) for s in spec["stages"]]
        versions: Counter[str] = Counter()
        late_ns = int(spec.get("late_ms", 5.0) * 1e6)
        acks: dict[tuple[int, int], tuple[str, int, int]] = {}
        for pi, pub in enumerate(self.publishers):

            def on_ack(ack_id: int, args: list[Any], now: int, pi: int = pi) -> None:
                member, version, due = acks.pop((pi, ack_id))
                self.acked.append((member, version))
                if due >= self.record_from:
                    self.hist.record_ns("ack", now - due)
                self.matcher.reply(member, Balance(member=member, posted=0, held=0, available=0,
                                                   version=version), now)  # fmt: skip

            pub.on_ack = on_ack
        async for n, due, now in paced(stages, t0, 1 / self.count, self.idx / self.count):
            if now - due > late_ns:
                self.counters["late"] += 1
            i = n % len(self.members)
            member = self.members[i]
            versions[member] += 1
            pi = i % len(self.publishers)
            pub = self.publishers[pi]
            payload = change_payload(member, versions[member], f"store{self.idx}")
            sent = min(due, time.monotonic_ns())  # as the gateway's flows: never before the send
            ack_id = await pub.emit("change", payload, ack=True)
            assert ack_id is not None
            acks[(pi, ack_id)] = (member, versions[member], sent)
            self.counters["published"] += 1
        # quiesce: every acked change reaches every session of its member, or the wait ends
        per_member = Counter(m for m, link in self.sessions if link.open)
        deadline = time.monotonic() + spec.get("quiesce", 10.0)
        while time.monotonic() < deadline:
            if not acks and all(self.received[k] >= per_member[k[0]] for k in self.acked):
                break
            await asyncio.sleep(0.05)
        self.counters["unacked"] = len(acks)
        expected = sum(per_member[m] for m, _ in self.acked)
        got = sum(min(self.received[k], per_member[k[0]]) for k in self.acked)
        self.counters["expected_receipts"] = expected
        self.counters["lost"] = expected - got

    def result(self) -> dict[str, Any]:
        return {"hist": self.hist.encode(), "counters": dict(self.counters)}


def _worker_main(idx: int, count: int, spec: dict[str, Any], conn: Connection) -> None:
    import uvloop

    from loadtests.worker import raise_nofile

    raise_nofile()
    uvloop.install()
    try:
        asyncio.run(_Worker(idx, count, spec, conn).main())
    except Exception as exc:  # the parent reports it instead of waiting for a result
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


# ----------------------------------------------------------------------------- run


async def run_push(
    redis_url: str,
    prefix: str,
    nodes: int,
    members: int,
    sessions_per_member: int,
    rate: float,
    seconds: float,
    ramp: float = 2.0,
    warmup: float = 2.0,
    workers: int = 2,
    source_ips: list[str] | None = None,
    quiesce: float = 10.0,
) -> dict[str, Any]:
    """The peer under the push stage's load; a report of the same shape as a stage's."""
    why = await asyncio.to_thread(install)
    if why:
        return {"error": why}
    from loadtests.nodes import cpu_seconds, rss_kb

    stages = [(st.duration, st.start, st.end) for st in simple_stages(rate, seconds, ramp)]
    ctx = multiprocessing.get_context("spawn")
    async with PeerServers(nodes, redis_url, f"{prefix}:sio") as servers:
        spec = {
            "urls": servers.urls,
            "members": members,
            "sessions_per_member": sessions_per_member,
            "stages": stages,
            "warmup": warmup,
            "source_ips": source_ips,
            "quiesce": quiesce,
        }
        procs, pipes = [], []
        try:
            for i in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(i, workers, spec, child), daemon=True)
                proc.start()
                procs.append(proc)
                pipes.append(parent)
            held = 0
            deadline = time.monotonic() + 60 + members * sessions_per_member / 200
            for pipe in pipes:
                msg = await _recv(pipe, deadline)
                if msg is None or msg[0] != "ready":
                    return {"error": f"peer clients did not connect: {msg!r}"}
                held += msg[1]
            cpu0 = {pid: cpu_seconds(pid) for pid in servers.pids}
            t_start = time.monotonic()
            t0 = time.monotonic_ns() + 200_000_000
            for pipe in pipes:
                pipe.send(t0)
            hist = Histograms()
            counters: Counter[str] = Counter()
            deadline = time.monotonic() + ramp + seconds + quiesce + 60
            for pipe in pipes:
                msg = await _recv(pipe, deadline)
                if msg is None or msg[0] != "result":
                    return {"error": f"peer client failed: {msg!r}"}
                hist.merge(msg[1]["hist"])
                counters.update(msg[1]["counters"])
            wall = time.monotonic() - t_start
            cpu = [round((cpu_seconds(p) - c) / wall * 100, 1) for p, c in cpu0.items()]
            rss = [round(rss_kb(pid) / 1024, 1) for pid in servers.pids]
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
    node_version = await asyncio.to_thread(
        subprocess.run, ["node", "--version"], capture_output=True, text=True, check=False
    )
    return {
        "peer": "Socket.IO " + _package_version("socket.io") + " (Node " + node_version.stdout.strip()
        + ") + @socket.io/redis-adapter " + _package_version("@socket.io/redis-adapter"),
        "nodes": nodes,
        "sessions": held,
        "members": members,
        "rate": rate,
        "seconds": seconds,
        "latency": {
            "push": hist.summary("push"),
            "ack": hist.summary("ack"),
        },
        "counters": dict(counters),
        "cpu_percent_of_core": cpu,
        "rss_mb": rss,
    }  # fmt: skip


def _package_version(name: str) -> str:
    try:
        meta = orjson.loads((PEER_DIR / "node_modules" / name / "package.json").read_bytes())
    except OSError:
        return "?"
    return str(meta.get("version", "?"))


if __name__ == "__main__":  # python -m loadtests.peer: a quick look on its own
    import sys

    out = asyncio.run(
        run_push(
            os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            f"peer{os.getpid()}",
            nodes=3,
            members=int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
            sessions_per_member=3,
            rate=float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0,
            seconds=float(sys.argv[3]) if len(sys.argv) > 3 else 10.0,
        )
    )
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
