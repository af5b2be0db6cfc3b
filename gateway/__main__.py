"""Command line: ``python -m gateway serve | migrate | token | rebuild-cache | birthdays``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from gateway.settings import Settings


def _serve(settings: Settings) -> None:
    from aiohttp import web

    from gateway.app import build_app

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        pass
    prefix = settings.store.redis_prefix

    async def app() -> web.Application:  # built inside the loop that serves it
        return build_app(settings, prefix)

    logging.getLogger(__name__).info(
        "node %s listening on %s:%d",
        settings.server.node_id,
        settings.server.host,
        settings.server.port,
    )
    web.run_app(
        app(),
        host=settings.server.host,
        port=settings.server.port,
        # The drain (app.Node.drain) has used up to 80 % of drain_seconds and closed every
        # session; aiohttp then waits at most a tenth more for handlers before cancelling them.
        shutdown_timeout=settings.server.drain_seconds * 0.1,
        access_log=None,
        print=None,
        handle_signals=True,
        backlog=4096,
    )


async def _migrate(settings: Settings) -> None:
    from gateway.schema import ensure_database, migrate
    from gateway.store.db import connect

    await ensure_database(settings.store.database_url)
    conn = await connect(settings.store.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print("migrations applied:", ", ".join(applied) if applied else "none (up to date)")


async def _rebuild(settings: Settings) -> None:
    from gateway.ledger import rebuild_cache
    from gateway.store.keys import Keys
    from gateway.store.redis import create_client

    store = settings.store
    redis = create_client(store.redis_url, timeout=30, cluster=store.redis_cluster)
    try:
        n, seconds = await rebuild_cache(
            store.database_url, redis, Keys(store.redis_prefix, cluster=store.redis_cluster)
        )
    finally:
        await redis.aclose()
    print(f"rebuilt {n} balances in {seconds:.2f} s")


async def _birthdays(settings: Settings) -> None:
    from gateway.app import birthdays_once

    done = await birthdays_once(settings)
    print(
        f"birthday rewards: {done.granted} granted, {done.deferred} deferred (set too close to "
        f"the date), {done.announced} coupons pushed late"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="run a gateway node")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("rebuild-cache", help="rebuild Redis balances from PostgreSQL")
    sub.add_parser(
        "birthdays",
        help="one pass of the birthday rewards (for cron; every node also runs one every "
        "GATEWAY_BIRTHDAY_SECONDS): each member is granted once a year whatever runs it",
    )
    tok = sub.add_parser(
        "token",
        help="mint a session token (GATEWAY_JWT_SECRET, or with --kid a merchant's key from "
        "GATEWAY_MERCHANT_KEYS_FILE)",
    )
    tok.add_argument("kind", choices=["pos", "app"])
    tok.add_argument("--merchant", required=True)
    tok.add_argument("--store")
    tok.add_argument("--terminal")
    tok.add_argument("--member")
    tok.add_argument("--channel")
    tok.add_argument("--ttl", type=float, default=3600.0)
    tok.add_argument("--kid", help="sign with this merchant key (its merchant must be --merchant)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a bad setting: one line, exit 2
        parser.error(str(exc))
    logging.basicConfig(
        level=settings.server.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.cmd == "serve":
        try:
            settings.check_serving()
        except ValueError as exc:
            parser.error(str(exc))
        _serve(settings)
    elif args.cmd == "migrate":
        asyncio.run(_migrate(settings))
    elif args.cmd == "rebuild-cache":
        asyncio.run(_rebuild(settings))
    elif args.cmd == "birthdays":
        asyncio.run(_birthdays(settings))
    elif args.cmd == "token":
        from gateway import auth

        secret = settings.auth.jwt_secret
        if args.kid is not None:
            found = settings.auth.merchant_keys.signing_key(args.kid)
            if found is None or found[0] != args.merchant:
                parser.error(f"no key {args.kid!r} of merchant {args.merchant!r}")
            secret = found[1]
        if args.kind == "pos":
            if not (args.store and args.terminal):
                parser.error("pos tokens need --store and --terminal")
            print(
                auth.mint_pos(
                    secret,
                    args.merchant,
                    args.store,
                    args.terminal,
                    args.ttl,
                    args.channel or "pos",
                    args.kid,
                )
            )
        else:
            if not args.member:
                parser.error("app tokens need --member")
            print(
                auth.mint_app(
                    secret, args.merchant, args.member, args.ttl, args.channel or "app", args.kid
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
