"""Make sure PostgreSQL and Redis answer, starting private ones if needed.

Reads DATABASE_URL and REDIS_URL (defaults: the local servers). If a server does not answer
there but its binaries are installed, starts a private one under ``.local/`` on a spare port,
says so, and points the environment at it. If neither works, stops with a message naming what
to install or start.

Usage: ``python -m scripts.services --ensure [-- command ...]`` runs ``command`` with the
environment pointing at working servers (and stops private servers afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/loyalty"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PRIVATE_PG_PORT = 55432
PRIVATE_REDIS_PORT = 56379


def _say(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def _pg_ok(url: str) -> bool:
    import asyncpg

    base, _, _ = url.rpartition("/")
    try:
        conn = await asyncpg.connect(base + "/postgres", timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def _redis_ok(url: str) -> bool:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await r.ping())
    except Exception:
        return False
    finally:
        await r.aclose()


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SystemExit(
            "PostgreSQL refuses to run as root and there is no 'postgres' user"
        ) from None
    if runuser is None:
        raise SystemExit("need 'runuser' to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *cmd]


def start_private_postgres() -> str:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise SystemExit(
            "PostgreSQL does not answer at DATABASE_URL and its binaries are not installed.\n"
            "Install PostgreSQL 15 (e.g. `apt-get install postgresql`) or start a server and "
            "set DATABASE_URL."
        )
    data = LOCAL / "pgdata"
    LOCAL.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(LOCAL, "postgres")
    if not (data / "PG_VERSION").exists():
        _say(f"initialising a private PostgreSQL in {data}")
        subprocess.run(
            _as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not _answers("127.0.0.1", PRIVATE_PG_PORT):
        _say(f"starting a private PostgreSQL on 127.0.0.1:{PRIVATE_PG_PORT} (data in {data})")
        subprocess.run(
            _as_postgres(
                [
                    pg_ctl,
                    "-D",
                    str(data),
                    "-l",
                    str(LOCAL / "pg.log"),
                    "-o",
                    f"-p {PRIVATE_PG_PORT} -k /tmp -c listen_addresses=127.0.0.1",
                    "-w",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return f"postgresql://postgres@127.0.0.1:{PRIVATE_PG_PORT}/loyalty"


def start_private_redis() -> str:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(
            "Redis does not answer at REDIS_URL and redis-server is not installed.\n"
            "Install Redis 7 (e.g. `apt-get install redis-server`) or start one and set "
            "REDIS_URL."
        )
    LOCAL.mkdir(exist_ok=True)
    if not _answers("127.0.0.1", PRIVATE_REDIS_PORT):
        _say(f"starting a private Redis on 127.0.0.1:{PRIVATE_REDIS_PORT}")
        subprocess.run(
            [
                server,
                "--port",
                str(PRIVATE_REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(LOCAL),
                "--logfile",
                str(LOCAL / "redis.log"),
            ],
            check=True,
        )
        for _ in range(50):
            if _answers("127.0.0.1", PRIVATE_REDIS_PORT):
                break
            time.sleep(0.1)
    return f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"


def ensure() -> dict[str, str]:
    """Return DATABASE_URL and REDIS_URL of servers that answer."""
    db = os.environ.get("DATABASE_URL", DEFAULT_DB)
    rd = os.environ.get("REDIS_URL", DEFAULT_REDIS)
    if not asyncio.run(_pg_ok(db)):
        host = urlsplit(db).hostname
        _say(f"no PostgreSQL answers at {host}; trying a private one")
        db = start_private_postgres()
        if not asyncio.run(_pg_ok(db)):
            raise SystemExit(f"the private PostgreSQL did not answer; see {LOCAL / 'pg.log'}")
    if not asyncio.run(_redis_ok(rd)):
        _say("no Redis answers at REDIS_URL; trying a private one")
        rd = start_private_redis()
        if not asyncio.run(_redis_ok(rd)):
            raise SystemExit(f"the private Redis did not answer; see {LOCAL / 'redis.log'}")
    return {"DATABASE_URL": db, "REDIS_URL": rd}


def stop_private() -> None:
    """Stop the private servers this script started, if any."""
    pg_ctl = _pg_bin("pg_ctl")
    data = LOCAL / "pgdata"
    if pg_ctl and (data / "postmaster.pid").exists():
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        _say("stopped the private PostgreSQL")
    if _answers("127.0.0.1", PRIVATE_REDIS_PORT) and shutil.which("redis-cli"):
        subprocess.run(
            ["redis-cli", "-p", str(PRIVATE_REDIS_PORT), "shutdown", "nosave"],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        _say("stopped the private Redis")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ensure", action="store_true")
    parser.add_argument("--stop", action="store_true", help="stop private servers")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.stop:
        stop_private()
        return 0
    env = ensure()
    cmd = [c for c in args.command if c != "--"] if args.command else []
    if not cmd:
        for k, v in env.items():
            print(f"{k}={v}")
        return 0
    # Tests create their own databases from the server in DATABASE_URL.
    return subprocess.call(cmd, env={**os.environ, **env})


if __name__ == "__main__":
    sys.exit(main())
