"""Helpers of the reorder tests: replenishable products, sales with lines, and moving a
sale back in time (the history a prediction reads)."""

from __future__ import annotations

import email
import email.message
import email.policy
from collections import deque
from datetime import datetime
from typing import Any

import asyncpg

from tests.loyalty_support import ok, setup_db
from tests.support import WsClient, free_port


class Smtp:
    """A real SMTP server (aiosmtpd) on a spare port: it answers each DATA with the next of
    ``replies`` (then 250) and keeps the messages it accepted."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.messages: list[email.message.EmailMessage] = []
        self.replies: deque[str] = deque()
        self.tried = 0
        server = self

        class Handler:
            async def handle_DATA(self, srv, session, envelope):  # type: ignore[no-untyped-def]
                server.tried += 1
                if server.replies:
                    return server.replies.popleft()
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(msg, email.message.EmailMessage)
                server.messages.append(msg)
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Smtp:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


async def product(
    pg_dsn: str, merchant: str, sku: str, cycle_days: int | None = 30, price: int = 1000
) -> None:
    """A catalogue product: replenishable with ``cycle_days``, durable with None."""
    await setup_db(
        pg_dsn,
        """INSERT INTO catalogue_products (merchant_id, sku, name, price, replenishable,
                                           cycle_days)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        merchant,
        sku,
        f"Product {sku}",
        price,
        cycle_days is not None,
        cycle_days,
    )


async def buy(till: WsClient, pg_dsn: str, op: str, member: str, at: datetime, **skus: int) -> None:
    """A sale of ``qty`` of each SKU (``sku=qty``), through the till, dated ``at``."""
    lines = [{"sku": s.replace("_", "-"), "qty": q, "price": 1000} for s, q in skus.items()]
    total = sum(1000 * q for q in skus.values())
    await ok(till, {"type": "sale", "op": op, "member": member, "total": total, "lines": lines})
    await setup_db(pg_dsn, "UPDATE sales SET created_at = $2 WHERE op_id = $1", op, at)


async def fetch(pg_dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
