"""The operation journal: every mutating command's ``op`` is written here before it is sent,
and removed once its reply is known, so a client that crashed can settle what it left open.

Why SQLite (the standard library's ``sqlite3``) rather than a JSON-lines file: a commit is
atomic and durable (``synchronous=FULL``: fsync'd before ``add`` returns), removing one entry
does not rewrite the file, a torn last line cannot happen, the order the operations were made
in is a primary key, and the offline queue to come (a register replaying the sales it made
while the link was down, in order, with their original ops) needs exactly that: more states
for an entry and ordered reads, on the same table. Calls run in a worker thread
(``asyncio.to_thread``), one at a time.

An entry is ``(seq, op, frame, scope, state, created_at)``: ``frame`` is the command as it was
encoded (its request id is replaced when it is sent again), ``scope`` the session scope it was
sent under (``""``: not known yet), ``state`` ``sent`` (its outcome is unknown until the
server answers).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from protocol.codec import decode_client
from protocol.messages import ClientFrame

SENT = "sent"
"""The command was written here before being sent; its outcome is unknown until answered."""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    op: str
    frame: ClientFrame
    scope: str
    state: str
    created_at: float


class Journal(Protocol):
    """Where a client keeps the operations whose outcome it does not know yet."""

    async def add(self, op: str, frame: bytes, scope: str = "") -> int:
        """Record ``op`` (durably) before it is sent; returns its sequence number. Adding an
        ``op`` already recorded keeps the first record (and returns its number)."""
        ...

    async def remove(self, op: str) -> None:
        """The reply of ``op`` is known: forget it."""
        ...

    async def pending(self) -> list[Entry]:
        """Every recorded operation, oldest first."""
        ...

    async def close(self) -> None: ...


class MemoryJournal:
    """A journal that is not durable (tests, and reads-only clients): a crash loses it."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._seq = 0

    async def add(self, op: str, frame: bytes, scope: str = "") -> int:
        if op in self._entries:
            return self._entries[op].seq
        self._seq += 1
        entry = Entry(self._seq, op, decode_client(frame), scope, SENT, time.time())
        self._entries[op] = entry
        return entry.seq

    async def remove(self, op: str) -> None:
        self._entries.pop(op, None)

    async def pending(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.seq)

    async def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL UNIQUE,
    frame BLOB NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'sent',
    created_at REAL NOT NULL
)
"""


class SqliteJournal:
    """A durable journal in one SQLite file (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _add(self, op: str, frame: bytes, scope: str) -> int:
        with self._lock:
            db = self._conn()
            db.execute(
                "INSERT INTO ops (op, frame, scope, state, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (op) DO NOTHING",
                (op, frame, scope, SENT, time.time()),
            )
            row = db.execute("SELECT seq FROM ops WHERE op = ?", (op,)).fetchone()
            return int(row[0])

    def _remove(self, op: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM ops WHERE op = ?", (op,))

    def _pending(self) -> list[Entry]:
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT seq, op, frame, scope, state, created_at FROM ops ORDER BY seq")
                .fetchall()
            )
        return [
            Entry(int(seq), str(op), decode_client(bytes(frame)), str(scope), str(state), created)
            for seq, op, frame, scope, state, created in rows
        ]

    def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def add(self, op: str, frame: bytes, scope: str = "") -> int:
        return await asyncio.to_thread(self._add, op, frame, scope)

    async def remove(self, op: str) -> None:
        await asyncio.to_thread(self._remove, op)

    async def pending(self) -> list[Entry]:
        return await asyncio.to_thread(self._pending)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)


def open_journal(journal: Journal | str | os.PathLike[str] | None) -> Journal:
    """A journal from what ``Client`` was given: a path (SQLite), a journal, or ``None``
    (a :class:`MemoryJournal`)."""
    if journal is None:
        return MemoryJournal()
    if isinstance(journal, str | os.PathLike):
        return SqliteJournal(journal)
    return journal
