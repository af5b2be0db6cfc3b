"""Private PostgreSQL and Redis servers on spare ports, for tests that kill or restart a
server (never the shared ones)."""

from __future__ import annotations

import email
import email.message
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from scripts.services import _answers, _as_postgres, _pg_bin
from tests.support import free_port


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="lg-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if _answers("127.0.0.1", self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lg-pg-"))
        self.data = self.dir / "data"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        assert initdb and pg_ctl, "PostgreSQL binaries are needed for this test"
        self.initdb, self.pg_ctl = initdb, pg_ctl
        if os.geteuid() == 0:
            uid = pwd.getpwnam("postgres")
            os.chown(self.dir, uid.pw_uid, uid.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(list(args)),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def init(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c max_connections=200",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-m", mode, "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a spare port, keeping every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.messages: list[email.message.Message] = []
        server = self

        class Handler:
            async def handle_DATA(self, srv, session, envelope):  # type: ignore[no-untyped-def]
                server.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def codes_to(self, address: str) -> list[str]:
        """The verification codes sent to ``address``, oldest first."""
        found = []
        for m in self.messages:
            if m["To"] == address:
                body = m.get_payload(decode=True)
                assert isinstance(body, bytes)
                found += re.findall(r"\b(\d{6})\b", body.decode())
        return found


class HttpReceiver:
    """A real HTTP server (aiohttp) on a spare port that records every JSON request body it
    receives and answers with ``status`` (an SMS provider, a webhook endpoint)."""

    def __init__(self, status: int = 200) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.status = status
        self.received: list[tuple[dict[str, str], object]] = []
        self._runner: object = None

    async def __aenter__(self) -> HttpReceiver:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.json()))
            return web.json_response({"ok": self.status < 300}, status=self.status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner
        return self

    async def __aexit__(self, *exc: object) -> None:
        from aiohttp import web

        assert isinstance(self._runner, web.AppRunner)
        await self._runner.cleanup()
