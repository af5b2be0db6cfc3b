"""The command line answers a bad setting with one clear line and exit code 2, and a store that
does not answer with one line and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    env = {**os.environ, "GATEWAY_LOG_LEVEL": "chatty"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "GATEWAY_LOG_LEVEL must be one of" in done.stderr
    assert "Traceback" not in done.stderr


def _gateway(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_store_that_does_not_answer_is_one_line_and_exit_1() -> None:
    """PostgreSQL down (a port nothing listens on), a database that is not there, Redis down:
    one line naming the error and the stores' addresses, the password hidden, no traceback."""
    down = "postgresql://postgres:s3cret@127.0.0.1:1/loyalty"
    missing = "postgresql://postgres@127.0.0.1:5432/no_such_database_here"
    for args, env, says in (
        (("migrate",), {"DATABASE_URL": down}, "ConnectionRefusedError"),
        (("birthdays",), {"DATABASE_URL": missing}, 'database "no_such_database_here"'),
        (("rebuild-cache",), {"REDIS_URL": "redis://127.0.0.1:1/0"}, "ConnectionError"),
        (("serve",), {"DATABASE_URL": missing, "GATEWAY_PORT": "1"}, "InvalidCatalogNameError"),
    ):
        done = _gateway(*args, **env)
        lines = [ln for ln in done.stderr.splitlines() if "listening on" not in ln]
        assert done.returncode == 1, (args, done.stderr[-2000:])
        assert len(lines) == 1 and says in lines[0], (args, done.stderr[-2000:])
        assert lines[0].startswith(f"python -m gateway {args[0]}: a store did not answer")
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
