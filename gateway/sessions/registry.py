"""The node's sessions, the one owner of them: who is connected, who is welcomed (by merchant,
for the broadcast; app sessions by member, for presence), and the drain that closes them all
when the node stops.

Shutdown (SIGTERM) drains: readiness fails at once (``draining``), new sessions are closed
with 3000 and new commands refused with ``draining``, in-flight commands finish, live sessions
are told to reconnect elsewhere with close code 3000, within ``drain_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.sessions.session import CLOSE_TIMEOUT, FLUSH_TIMEOUT, Session
from protocol.codes import CloseCode

if TYPE_CHECKING:
    from gateway.auth import Principal

log = logging.getLogger(__name__)


class Registry:
    """``left`` is told of every welcomed app session that ends (presence forgets it)."""

    def __init__(self, left: Callable[[str, Principal], None] | None = None) -> None:
        self.sessions: set[Session] = set()
        #: Sessions connected and not yet welcomed (``connected`` .. ``admit`` or ``forget``).
        self.pending = 0
        #: Welcomed sessions per merchant (broadcast targets).
        self._by_merchant: dict[str, set[Session]] = {}
        self._left = left
        self.draining = False
        self.drained = asyncio.Event()

    def __len__(self) -> int:
        return len(self.sessions)

    def connected(self, session: Session) -> None:
        """A new connection: held, and counted as pending until it is welcomed."""
        self.sessions.add(session)
        self.pending += 1

    def admit(self, session: Session) -> None:
        """A welcomed session: no longer pending; indexed by merchant (broadcast)."""
        p = session.principal
        assert p is not None
        self.pending -= 1
        self._by_merchant.setdefault(p.merchant, set()).add(session)

    def forget(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        p = session.principal
        if p is None:
            self.pending -= 1  # never welcomed
            return
        group = self._by_merchant.get(p.merchant)
        if group is not None:
            group.discard(session)
            if not group:
                del self._by_merchant[p.merchant]
        if p.kind == "app" and p.member is not None and self._left is not None:
            self._left(session.id, p)

    def of_merchant(self, merchant: str) -> set[Session]:
        return self._by_merchant.get(merchant) or set()

    def members(self) -> list[tuple[str, Principal]]:
        """The live app/web sessions scoped to a member (presence refreshes their entries)."""
        return [
            (s.id, s.principal)
            for s in self.sessions
            if s.principal is not None
            and s.principal.kind == "app"
            and s.principal.member is not None
            and not s.closing
        ]

    async def drain(self, budget: float) -> None:
        """Refuse new sessions and commands, finish in-flight commands, close sessions with
        3000.

        Budget: half of ``budget`` for in-flight commands (new ones are refused with
        ``draining`` meanwhile), then the close handshakes, all within 80% of it so the rest
        of the shutdown fits too."""
        if self.draining:
            await self.drained.wait()
            return
        self.draining = True
        start = time.monotonic()
        sessions = list(self.sessions)
        inflight = [t for s in sessions for t in s.inflight]
        # Let load balancers see the failed readiness before sessions reconnect elsewhere.
        grace = asyncio.create_task(asyncio.sleep(min(1.0, budget * 0.1)))
        await asyncio.wait([grace, *inflight], timeout=max(0.05, budget * 0.5))
        grace.cancel()
        sessions = list(self.sessions)
        # Commands still running reply before their session's close frame, within what is
        # left of the budget once the flush and the close handshake are set aside.
        left = budget * 0.8 - (time.monotonic() - start)
        reply_grace = max(0.0, left - CLOSE_TIMEOUT - 1.0 - FLUSH_TIMEOUT)
        for s in sessions:
            s.close_soon(
                CloseCode.DRAINING, "node draining: reconnect to another node", reply_grace
            )
        closing = [t for s in sessions for t in s.inflight]
        left = budget * 0.8 - (time.monotonic() - start)
        if closing:
            await asyncio.wait(closing, timeout=max(0.05, left))
        log.info("drained %d sessions in %.2f s", len(sessions), time.monotonic() - start)
        self.drained.set()
