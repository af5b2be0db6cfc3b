"""How a node writes one broadcast to its sessions (gateway/fanout/broadcast.py): a chunk of
sessions at a time, so other work runs in between, and broadcasts in the order they came."""

from __future__ import annotations

import asyncio

from gateway.fanout import broadcast
from gateway.fanout.broadcast import LocalBroadcast
from gateway.store.keys import Keys

LOG: list[tuple[str, int, bytes]] = []


class Recorder:
    def __init__(self, i: int) -> None:
        self.i = i

    def send_framed(self, framed: bytes) -> None:
        LOG.append(("write", self.i, framed))


async def test_broadcasts_reach_every_session_in_order_with_other_work_in_between():
    LOG.clear()
    keys = Keys("bd")
    sessions = [Recorder(i) for i in range(broadcast.CHUNK * 3 + 7)]
    local = LocalBroadcast(keys, lambda merchant: sessions if merchant == "m1" else [])

    async def other_work() -> None:
        for n in range(3):
            LOG.append(("other", n, b""))
            await asyncio.sleep(0)

    local.deliver(keys.broadcast_channel("m1"), b'{"n":1}')
    local.deliver(keys.broadcast_channel("m1"), b'{"n":2}')
    local.deliver(keys.broadcast_channel("m2"), b'{"n":3}')  # nobody of m2 here
    other = asyncio.create_task(other_work())
    assert local._writer is not None
    await local._writer
    await other
    writes = [(i, f) for kind, i, f in LOG if kind == "write"]
    assert len(writes) == 2 * len(sessions)
    assert local.delivered == 2 * len(sessions)
    per_session: dict[int, list[bytes]] = {}
    for i, f in writes:
        per_session.setdefault(i, []).append(f)
    assert all(len(v) == 2 and b'"n":1' in v[0] and b'"n":2' in v[1] for v in per_session.values())
    # the other task ran while the first broadcast was still being written
    first_other = next(k for k, e in enumerate(LOG) if e[0] == "other")
    last_of_first = max(k for k, e in enumerate(LOG) if e[0] == "write" and b'"n":1' in e[2])
    assert first_other < last_of_first
    await local.close()


async def test_a_session_that_closed_meanwhile_is_skipped_by_its_own_send():
    """The snapshot is taken on arrival; a session closing during the delivery handles the
    write itself (Session.send_framed drops frames once closing)."""
    LOG.clear()
    keys = Keys("bd2")
    sessions = [Recorder(i) for i in range(5)]
    local = LocalBroadcast(keys, lambda merchant: sessions)
    local.deliver(keys.broadcast_channel("m1"), b'{"n":1}')
    sessions.append(Recorder(99))  # came after the broadcast arrived: not in its snapshot
    assert local._writer is not None
    await local._writer
    assert sorted(i for _, i, _ in LOG) == [0, 1, 2, 3, 4]
    await local.close()


async def test_a_notice_id_reused_by_another_publish_is_delivered_again():
    """Found in review: the node remembered delivered notices by id, to never deliver a replayed
    one twice; but the caller names the id (an offer's), so another merchant's notice with the
    same id, or the same offer announced again, was dropped as a replay."""
    from protocol.codec import encode
    from protocol.messages import Notice

    keys = Keys("bd")
    got: dict[str, list[bytes]] = {"m1": [], "m2": []}

    class Sink:
        def __init__(self, merchant: str) -> None:
            self.merchant = merchant

        def send_framed(self, framed: bytes) -> None:
            got[self.merchant].append(framed)

    sinks = {"m1": [Sink("m1")], "m2": [Sink("m2")]}
    local = LocalBroadcast(keys, lambda merchant: sinks.get(merchant, []))
    first = encode(Notice(notice="offer-42", merchant="m1", kind="offer", at=1))
    again = encode(Notice(notice="offer-42", merchant="m1", kind="offer", payload={"v": 2}, at=2))
    other = encode(Notice(notice="offer-42", merchant="m2", kind="offer", at=1))
    for merchant, data in (("m1", first), ("m1", again), ("m2", other), ("m1", first)):
        local.deliver(keys.broadcast_channel(merchant), data)
    assert local._writer is not None
    await local._writer
    assert len(got["m1"]) == 2 and len(got["m2"]) == 1  # the same frame twice: once
