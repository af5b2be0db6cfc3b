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


class PrivateRedisCluster:
    """A private Redis Cluster on spare ports: ``masters`` masters, one replica each, made by
    ``redis-cli --cluster create`` from the redis-server binary, torn down by ``stop``. The
    node timeout is short (1 s) so a killed master's replica takes over within seconds."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.ports = [free_port() for _ in range(masters * 2)]
        #: Each node's cluster bus port: its own spare port (the default, port + 10000, may
        #: be taken, or beyond 65535).
        self.bus = {p: free_port() for p in self.ports}
        self.node_timeout_ms = node_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="lg-rcluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A live node's URL (the seed a client starts from)."""
        return f"redis://127.0.0.1:{self._live()[0]}/0"

    def _spawn(self, port: int) -> None:
        node_dir = Path(self.dir) / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-port",
                str(self.bus[port]),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
                "--logfile",
                str(node_dir / "log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if _answers("127.0.0.1", port):
                return
            time.sleep(0.05)
        log = (node_dir / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"cluster node {port} did not start:\n{log}")

    def cli(self, *args: str, port: int | None = None, timeout: float = 60) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port or self._live()[0]), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return out.stdout.decode()

    def start(self) -> None:
        for port in self.ports:
            self._spawn(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()
        self.wait_replicas()

    def wait_replicas(self, timeout: float = 30) -> None:
        """Until every master has a replica in sync (else a killed master has no one to take
        over: ``--cluster create`` returns before the replicas have joined)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                masters = self.masters()
                if all(
                    "connected_slaves:0" not in self.cli("info", "replication", port=p)
                    for p in masters
                ) and all(
                    "master_link_status:up" in self.cli("info", "replication", port=p)
                    for p in self._live()
                    if p not in masters
                ):
                    return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the replicas did not join")

    def wait_failover(self, victim: int, timeout: float = 30) -> None:
        """After ``victim`` (a master) was killed: until a replica owns its slots and every
        live node agrees."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if victim not in self.masters():
                    self.wait_ok(max(1.0, deadline - time.monotonic()))
                    return
            except (subprocess.SubprocessError, RuntimeError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from {victim}")

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and agrees on every slot's master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [p for p, proc in self.procs.items() if proc.poll() is None]
            try:
                infos = [self.cli("cluster", "info", port=p) for p in live]
                if all("cluster_state:ok" in i for i in infos):
                    views = {self._slot_owners(p) for p in live}
                    if len(views) == 1:
                        return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def _slot_owners(self, port: int) -> tuple[tuple[int, int, int], ...]:
        owners = []
        for line in self.cli("cluster", "nodes", port=port).splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2]:
                node_port = int(parts[1].split(":")[1].split("@")[0])
                for r in parts[8:]:
                    if r.startswith("["):
                        continue
                    lo, _, hi = r.partition("-")
                    owners.append((int(lo), int(hi or lo), node_port))
        return tuple(sorted(owners))

    def masters(self) -> list[int]:
        return sorted({p for _, _, p in self._slot_owners(self._live()[0])})

    def master_of(self, slot: int) -> int:
        for lo, hi, port in self._slot_owners(self._live()[0]):
            if lo <= slot <= hi:
                return port
        raise LookupError(slot)

    def node_id(self, port: int) -> str:
        return self.cli("cluster", "myid", port=port).strip()

    def _live(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def migrate_slot(self, slot: int, source: int, target: int) -> None:
        """Move one slot (and its keys) from master ``source`` to master ``target``, the way
        ``redis-cli --cluster reshard`` does it: IMPORTING/MIGRATING, MIGRATE the keys, then
        SETSLOT NODE on both and the other masters."""
        src, dst = self.node_id(source), self.node_id(target)
        self.cli("cluster", "setslot", str(slot), "importing", src, port=target)
        self.cli("cluster", "setslot", str(slot), "migrating", dst, port=source)
        while True:
            names = self.cli("cluster", "getkeysinslot", str(slot), "100", port=source).split()
            if not names:
                break
            self.cli(
                "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *names, port=source
            )
        for port in self.masters():
            self.cli("cluster", "setslot", str(slot), "node", dst, port=port)
        self.wait_ok()

    def restart(self, port: int) -> None:
        """Start a killed node again (it rejoins from its nodes.conf; a master that lost its
        slots meanwhile comes back as a replica of the one promoted in its place)."""
        self._spawn(port)
        self.wait_ok()
        self.wait_replicas()

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
