"""Every command the protocol defines has a handler, and the order it keeps among its
session's commands is the one its kind needs (``gateway.sessions.ordering``): a command that
changes points (it carries an ``op``) is sequenced, and those that read what earlier commands
wrote before they reach the ledger run after them."""

from __future__ import annotations

import typing

import msgspec

from gateway.sessions import Order
from protocol import loyalty as ly
from protocol import messages as m
from tests.support import settings_for

#: Commands that read what an earlier command wrote before they reach the ledger.
READS_EARLIER = {ly.Return, ly.VoidCode, m.GetOutcome}


def client_frames() -> set[type]:
    return {t for t in typing.get_args(m.ClientFrame)}


async def test_every_command_is_registered_in_the_order_its_kind_needs(pg_dsn: str) -> None:
    from gateway.app import Node

    node = Node(settings_for(pg_dsn, "redis://127.0.0.1:6379/0"), "lg-registration")
    try:
        routes = node.router.routes()
        frames = client_frames() - {m.Hello}  # the hello is the endpoint's own
        assert frames <= set(routes), frames - set(routes)
        for frame in frames:
            fields = {f.name for f in msgspec.structs.fields(frame)}
            order = routes[frame].order
            if frame in READS_EARLIER:
                assert order is Order.AFTER_WRITES, frame
            elif "op" in fields:
                assert order is Order.SEQUENCED, frame
            else:
                assert order is Order.FREE, frame
    finally:
        await node.redis.aclose()
