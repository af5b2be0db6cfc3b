"""A point-of-sale register on loyalty_client: look up (or enrol) the shopper, show the cashier
view, ring up a sale, pay part of the next basket with points (reserve, then commit), and send
an operation again after a timeout with its own op, which the gateway applies once.

Run it against a gateway (``make run`` starts two nodes on 8081 and 8082; this example mints a
development token itself, signed with the gateway's development secret, as a POS vendor's back
end would sign one with the merchant's key)::

    python clients/python/examples/pos.py --merchant demo-coffee --phone "(415) 555-2671" \\
        --url http://127.0.0.1:8081 --url http://127.0.0.1:8082

Give ``--token`` (or LOYALTY_TOKEN) to use a token of your own instead. The register's op
journal is ``--journal`` (default ``./till.db``): start the script again after killing it in
the middle of a sale and the new run settles that sale first, exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time

from loyalty_client import (
    Changed,
    Client,
    CommandError,
    Connected,
    Disconnected,
    OutcomeUnknown,
    Settled,
)

from protocol.codes import ErrorCode
from protocol.messages import SaleLine

DEV_SECRET = "dev-only-secret-change-me-not-for-production"  # the development default


def dev_token(secret: str, merchant: str, store: str, terminal: str, ttl: int = 900) -> str:
    """An HS256 POS token (a vendor's back end mints these; never ship a secret in a till)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"typ": "pos", "mer": merchant, "sto": store, "ter": terminal, "chn": "pos"}
    body = b64(json.dumps({**claims, "exp": int(time.time()) + ttl}).encode())
    sig = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(sig)}"


async def watch(till: Client) -> None:
    """What the register hears besides its replies: live changes, reconnects, settlements."""
    async for event in till.events():
        if isinstance(event, Changed):
            c = event.change
            print(f"   [push] {c.member}: available {c.available} (v{c.version}, {c.cause.kind})")
        elif isinstance(event, Connected) and event.resumed:
            print(f"   [link] back on {event.welcome.node}; subscriptions resumed")
        elif isinstance(event, Disconnected):
            print(f"   [link] lost ({event.code}); reconnect: {event.reconnect}")
        elif isinstance(event, Settled):
            outcome = "applied" if event.data is not None else f"refused ({event.error})"
            print(f"   [journal] {event.op} settled: {outcome}")


async def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("LOYALTY_TOKEN")

    def get_token() -> str:  # called before every connection and every refresh
        return token or dev_token(args.secret, args.merchant, args.store, args.terminal)

    till = Client(
        args.url,
        get_token,
        journal=args.journal,
        prefix=f"{args.terminal}-",
        client_name="example-pos/1.0",
        request_timeout=5.0,
    )
    welcome = await till.connect(timeout=30)
    print(f"connected to {welcome.node} as {welcome.scope.store}/{welcome.scope.terminal}")
    watcher = asyncio.create_task(watch(till))
    try:
        # 1. The shopper: look them up by phone, or enrol them on the spot.
        try:
            shopper = await till.lookup(phone=args.phone)
            print(f"found member {shopper.member}")
        except CommandError as exc:
            if exc.code is not ErrorCode.MEMBER_NOT_FOUND:
                raise
            shopper = await till.enrol(args.phone, name=args.name)
            print(f"enrolled member {shopper.member} (created={shopper.created})")
        member = shopper.member

        # 2. The cashier view: balance, tier, rewards, offers; the till now watches the member.
        view = await till.cashier_view(member, replace=True)
        print(
            f"cashier view: {view.balance.available} points available, tier "
            f"{view.tier.name or '-'}, {len(view.rewards)} rewards, {len(view.offers)} offers"
        )

        # 3. A sale (minor units): the op is made and journaled by the client.
        sale = await till.sale(member, 1250, [SaleLine(sku="latte", qty=2, price=625)])
        print(f"sale {sale.op}: +{sale.points} points, balance {sale.balance.available}")

        # 4. Paying with points: hold, then spend the hold.
        hold = await till.reserve(member, min(10, sale.balance.available), ttl_ms=60_000)
        paid = await till.commit(member, hold.hold)
        print(f"hold {hold.hold}: {paid.status}, {paid.committed} points spent")

        # 5. A reply that does not come in time: the client sends the same op again (and,
        # still unknown after its attempts, settles it in the background). Sending it again
        # here with the same op is safe too: the gateway applies it once.
        op = till.new_op()
        try:
            receipt = await till.sale(member, 300, op=op, timeout=0.001)  # far too short
        except OutcomeUnknown as exc:
            print(f"sale {exc.op}: no reply in time; sending it again with the same op")
            receipt = await till.sale(member, 300, op=op)
        again = await till.sale(member, 300, op=op)
        assert again.balance.version == receipt.balance.version  # the original outcome
        print(f"sale {op}: applied once (+{receipt.points}), version {receipt.balance.version}")

        await till.wait_settled(timeout=30)
        print("journal empty: every operation settled")
    finally:
        await till.close()
        watcher.cancel()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", action="append", help="a gateway node (repeat for several)")
    p.add_argument("--merchant", default="demo-coffee")
    p.add_argument("--store", default="store-1")
    p.add_argument("--terminal", default="till-7")
    p.add_argument("--phone", default="(415) 555-2671")
    p.add_argument("--name", default="Sam")
    p.add_argument("--journal", default="till.db")
    p.add_argument("--token", help="a POS token (else one is minted with --secret)")
    p.add_argument("--secret", default=os.environ.get("GATEWAY_JWT_SECRET", DEV_SECRET))
    args = p.parse_args(argv)
    args.url = args.url or ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
