"""Command line: ``python -m gateway serve | migrate | token | rebuild-cache | birthdays |
segments``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.settings import Settings

#: Exit code of a command whose store did not answer (a bad setting is 2, argparse's).
EXIT_STORE = 1


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _store_errors() -> tuple[type[BaseException], ...]:
    import asyncpg
    import redis.exceptions

    from gateway.errors import GatewayError

    return (
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        GatewayError,
    )


def _run(cmd: str, settings: Settings, run: Callable[[], Any]) -> None:
    """Run ``cmd``; a store that does not answer (PostgreSQL or Redis down, a database that is
    not there, a refused password), or a port ``serve`` cannot listen on, is one line on stderr
    and exit code 1, not a traceback."""
    try:
        run()
    except _store_errors() as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            srv = settings.server  # the listener's bind, not a store
            print(
                f"python -m gateway {cmd}: cannot listen on {srv.host}:{srv.port}: {exc.strerror}",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_STORE) from None
        s = settings.store
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"python -m gateway {cmd}: a store did not answer: {type(exc).__name__}"
            + (f": {reason}" if reason else "")
            + f" (DATABASE_URL={_redacted(s.database_url)}, REDIS_URL={_redacted(s.redis_url)})",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_STORE) from None


def _async(coro: Callable[[Settings], Coroutine[Any, Any, None]], settings: Settings) -> None:
    asyncio.run(coro(settings))


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
    from gateway.passes import birthdays_once

    done = await birthdays_once(settings)
    print(
        f"birthday rewards: {done.granted} granted, {done.deferred} deferred (set too close to "
        f"the date), {done.announced} coupons pushed late"
    )


async def _segments(settings: Settings, merchant: str | None) -> None:
    from gateway.passes import segments_once

    for m, done in await segments_once(settings, merchant):
        print(
            f"segments of {m}: {done.members} members, {done.entered} entered, {done.left} left, "
            f"{done.seconds:.1f} s"
        )


def _parser() -> argparse.ArgumentParser:
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
    seg = sub.add_parser(
        "segments",
        help="recompute every merchant's segments (nightly, from cron: relative-time "
        "conditions move as days pass; RFM quintiles afresh); sales keep moving meanwhile",
    )
    seg.add_argument("--merchant", help="only this merchant")
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
    return parser


def _token(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a bad setting: one line, exit 2
        parser.error(str(exc))
    from gateway import logs

    logs.configure(settings.server.log_level, settings.server.log_format, settings.server.node_id)
    if args.cmd == "serve":
        try:
            settings.check_serving()
        except ValueError as exc:
            parser.error(str(exc))
        _run("serve", settings, lambda: _serve(settings))
    elif args.cmd == "migrate":
        _run("migrate", settings, lambda: _async(_migrate, settings))
    elif args.cmd == "rebuild-cache":
        _run("rebuild-cache", settings, lambda: _async(_rebuild, settings))
    elif args.cmd == "birthdays":
        _run("birthdays", settings, lambda: _async(_birthdays, settings))
    elif args.cmd == "segments":
        _run("segments", settings, lambda: asyncio.run(_segments(settings, args.merchant)))
    elif args.cmd == "token":
        _token(parser, args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
