"""The Socket.IO peer the bench measures the push path against (``loadtests/peer.py``): real
Node servers over the real Redis, driven by the generator's Engine.IO client."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from loadtests import peer
from loadtests.bench_markdown import markdown
from tests.conftest import REDIS_URL

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the Socket.IO peer needs node and npm",
)


@needs_node
async def test_peer_delivers_every_change_to_every_session_once_in_order(redis_prefix: str) -> None:
    out = await peer.run_push(
        REDIS_URL, f"{redis_prefix}:peer", nodes=2, members=20, sessions_per_member=2,
        rate=100.0, seconds=1.5, ramp=0.0, warmup=0.0, workers=1, quiesce=5.0,
    )  # fmt: skip
    assert "error" not in out, out
    c = out["counters"]
    assert out["sessions"] == 40
    assert c["published"] == 150
    assert c["unacked"] == 0
    assert c["expected_receipts"] == 300
    assert c["lost"] == 0
    assert c["pushes"] == 300  # each change once to each of its member's two sessions
    assert c.get("out_of_order", 0) == 0
    # every push was matched to its change's ack (the same matcher as the gateway's push)
    assert out["latency"]["push"]["count"] == 300
    assert out["latency"]["ack"]["count"] == 150
    assert out["peer"].startswith("Socket.IO 4.")
    assert len(out["cpu_percent_of_core"]) == 2


@needs_node
async def test_sessions_watch_only_their_own_members_room(redis_prefix: str) -> None:
    """A change reaches the sessions of its member and nobody else's."""
    from loadtests.client import connectors

    assert await asyncio.to_thread(peer.install) is None
    seen: dict[str, list[int]] = {"a": [], "b": []}
    async with peer.PeerServers(2, REDIS_URL, f"{redis_prefix}:peer2") as servers:
        (http,) = connectors(None)
        links = []
        try:
            for name, node in (("a", 1), ("b", 1)):
                link = peer._SioLink(lambda ev, p, now, name=name: seen[name].append(p["version"]))
                await link.connect(http, servers.urls[node], {"m": name})
                links.append(link)
            acks: list[int] = []
            pub = peer._SioLink(lambda *a: None, lambda i, args, now: acks.append(args[0]))
            await pub.connect(http, servers.urls[0], {})
            links.append(pub)
            for v in (1, 2, 3):
                await pub.emit("change", peer.change_payload("a", v, "s1"), ack=True)
            for _ in range(200):
                if len(seen["a"]) == 3:
                    break
                await asyncio.sleep(0.01)
            assert acks == [1, 2, 3]
            assert seen == {"a": [1, 2, 3], "b": []}
        finally:
            for link in links:
                await link.close()
            await http.close()


def test_bench_report_puts_the_peer_beside_the_push_stage() -> None:
    lat = {
        "count": 10,
        "p50_ms": 2.0,
        "p90_ms": 3.0,
        "p99_ms": 20.0,
        "p99.9_ms": 30.0,
        "max_ms": 40.0,
    }
    peer_lat = {**lat, "p50_ms": 0.5, "p99_ms": 4.0}
    r = {
        "date": "2026-11-24T00:00:00+00:00", "profile": "quick", "nodes": 3,
        "sizes": {"checkout_rate": 2000, "push_rate": 1000},
        "machine": {"cores": 2, "memory_gib": 24, "kernel": "x", "python": "3.11", "postgres": "15", "redis": "7"},
        "push": {"latency": {"push": lat}},
        "peer": {"peer": "Socket.IO 4.8.4", "nodes": 3, "sessions": 6000, "members": 2000, "rate": 1000,
                 "seconds": 10, "latency": {"push": peer_lat, "ack": lat},
                 "counters": {"published": 10, "expected_receipts": 30, "lost": 0}},
    }  # fmt: skip
    md = markdown(r)
    assert "2.00 / 20.00 ms vs 0.50 / 4.00 ms (4.0x / 5.0x) | MISS |" in md
    assert "**Gateway / peer push: p50 4.0x, p99 5.0x**" in md
    r["peer"] = {"error": "node and npm are not installed"}
    assert "Not measured: node and npm are not installed" in markdown(r)
