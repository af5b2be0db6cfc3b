"""The outbox's sender: a worker on every node claims due messages (one UPDATE over a
FOR UPDATE SKIP LOCKED selection: another node takes the next ones), leases them, reads the
members' consent again (a consent withdrawn since the message was made stops it: ``skipped``)
and hands each to the SMTP server or the SMS provider.

- Sent: ``sent``. Not handed over: an SMTP 4xx, no connection, an HTTP 5xx, 408 or 429 try
  again after ``backoff`` x 2^(attempt - 1) seconds (jittered, at most an hour), up to
  ``max_attempts``; an SMTP 5xx or another HTTP 4xx, or the attempts spent: ``failed``.
- Never sent twice: a message is claimed by one node at a time, and one whose lease ran out
  while ``sending`` (its node stopped mid-send: it may have gone) is ``failed`` as
  interrupted, not sent again. Each carries its delivery id (the email's ``Message-ID``, the
  SMS's ``Idempotency-Key``) for the receiving side to see a repeat by.
- Every email carries the one-click unsubscribe of RFC 8058 (``List-Unsubscribe`` with the
  signed HTTPS link, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from gateway.errors import Refused, Undelivered
from gateway.members import Profiles, reach
from gateway.reorder.links import LinkRefused, LinkSigner
from gateway.store.db import translate_errors
from protocol.wallet import Consents


class MailSender(Protocol):
    """``gateway.notify.Smtp``: raises ``Undelivered``."""

    async def send_mail(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...


class TextSender(Protocol):
    """``gateway.notify.HttpSms``: raises ``Undelivered``."""

    async def send_text(self, to: str, text: str, key: str) -> None: ...


#: Messages claimed at a time by a node.
CLAIM = 100
#: Sends in flight at once on a node.
CONCURRENCY = 20
#: Seconds a claim holds a message.
LEASE = 60.0
#: Attempts before a message that keeps failing for now is given up.
MAX_ATTEMPTS = 5
#: Seconds before the first retry (doubled each time, at most ``MAX_BACKOFF``).
BACKOFF = 30.0
MAX_BACKOFF = 3600.0

_CLAIM = """
UPDATE reorder_messages m
   SET state = 'sending', attempts = m.attempts + 1,
       lease_until = now() + make_interval(secs => $4)
 WHERE m.id IN (SELECT id FROM reorder_messages
                 WHERE state = 'pending' AND next_attempt_at <= $1
                   AND channel = ANY($2::text[])
                 ORDER BY next_attempt_at LIMIT $3
                   FOR UPDATE SKIP LOCKED)
RETURNING m.id, m.delivery_id, m.merchant_id, m.member_id, m.channel, m.to_address, m.subject,
          m.body_text, m.body_html, m.attempts
"""

_INTERRUPTED = """
UPDATE reorder_messages SET state = 'failed', lease_until = NULL,
       last_error = 'interrupted while sending (it may have gone): not sent again'
 WHERE state = 'sending' AND lease_until < now()
"""

_DONE = """
UPDATE reorder_messages
   SET state = $2, last_error = $3, next_attempt_at = $4, lease_until = NULL,
       sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END
 WHERE id = $1 AND state = 'sending'
"""


@dataclass(frozen=True, slots=True)
class OutboxPass:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0

    def __add__(self, o: OutboxPass) -> OutboxPass:
        return OutboxPass(
            self.sent + o.sent,
            self.retrying + o.retrying,
            self.failed + o.failed,
            self.skipped + o.skipped,
            self.interrupted + o.interrupted,
        )


def backoff(attempt: int, base: float = BACKOFF) -> float:
    """Seconds before retry ``attempt`` + 1: base x 2^(attempt - 1), +-20 %, at most an hour."""
    return float(min(MAX_BACKOFF, base * 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2))


class Outbox:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        profiles: Profiles,
        links: LinkSigner,
        smtp: MailSender | None,
        sms: TextSender | None,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_seconds: float = BACKOFF,
        lease: float = LEASE,
    ) -> None:
        self._pool = pool
        self._profiles = profiles
        self._links = links
        self._smtp = smtp
        self._sms = sms
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._lease = lease
        self._gate = asyncio.Semaphore(CONCURRENCY)

    @property
    def channels(self) -> list[str]:
        """The channels this node can send (a node claims no message it could not send)."""
        return [c for c, s in (("email", self._smtp), ("sms", self._sms)) if s is not None]

    async def run(self, now: datetime | None = None) -> OutboxPass:
        """Everything due as of ``now`` (default: this node's clock)."""
        now = datetime.now(UTC) if now is None else now
        with translate_errors("reorder outbox"):
            status = await self._pool.execute(_INTERRUPTED)
        done = OutboxPass(interrupted=int(status.rsplit(" ", 1)[-1]))
        if not self.channels:
            return done
        while True:
            with translate_errors("reorder outbox"):
                claimed = await self._pool.fetch(_CLAIM, now, self.channels, CLAIM, self._lease)
            if not claimed:
                return done
            done += await self._send_all(claimed, now)

    async def _send_all(self, claimed: list[Any], now: datetime) -> OutboxPass:
        who: dict[tuple[str, str], Any] = {}
        for merchant in {r["merchant_id"] for r in claimed}:
            members = sorted({r["member_id"] for r in claimed if r["merchant_id"] == merchant})
            for m, rch in (await reach(self._pool, merchant, members)).items():
                who[(merchant, m)] = rch
        outcomes = await asyncio.gather(*(self._one(r, who, now) for r in claimed))
        total = OutboxPass()
        for o in outcomes:
            total += o
        return total

    async def _one(self, r: Any, who: dict[tuple[str, str], Any], now: datetime) -> OutboxPass:
        rch = who.get((r["merchant_id"], r["member_id"]))
        ok = rch is not None and (rch.consent_email if r["channel"] == "email" else rch.consent_sms)
        if not ok:
            await self._done(r["id"], "skipped", "no consent for the channel when sent")
            return OutboxPass(skipped=1)
        try:
            async with self._gate:
                await self._deliver(r)
        except Undelivered as exc:
            if exc.permanent or r["attempts"] >= self._max_attempts:
                await self._done(r["id"], "failed", exc.message)
                return OutboxPass(failed=1)
            later = now + timedelta(seconds=backoff(r["attempts"], self._backoff))
            await self._done(r["id"], "pending", exc.message, later)
            return OutboxPass(retrying=1)
        await self._done(r["id"], "sent", None)
        return OutboxPass(sent=1)

    async def _deliver(self, r: Any) -> None:
        if r["channel"] == "sms":
            assert self._sms is not None
            await self._sms.send_text(r["to_address"], r["body_text"], r["delivery_id"])
            return
        assert self._smtp is not None
        unsubscribe = self._links.unsubscribe(r["merchant_id"], r["member_id"], "email", r["id"])
        await self._smtp.send_mail(
            r["to_address"],
            r["subject"],
            r["body_text"],
            r["body_html"],
            {
                "Message-ID": f"<reorder.{r['delivery_id'].replace('/', '.')}."
                f"{r['merchant_id']}@loyalty.invalid>",
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )

    async def _done(
        self, message: int, state: str, error: str | None, retry_at: datetime | None = None
    ) -> None:
        with translate_errors("reorder outbox"):
            await self._pool.execute(_DONE, message, state, error, retry_at)

    async def unsubscribe(self, token: str) -> tuple[str, str]:
        """Withdraw the consent a signed unsubscribe link names, at once (the member's
        watchers are told: ``profile_changed``): (merchant, channel). ``LinkRefused`` for a
        link the gateway did not sign or that expired."""
        link = self._links.read_unsubscribe(token)
        consent = Consents(email=False) if link.channel == "email" else Consents(sms=False)
        with contextlib.suppress(Refused):  # erased since: nothing left to withdraw
            await self._profiles.update(
                link.merchant, link.member, source="unsubscribe", consent=consent
            )
        with translate_errors("reorder outbox"):
            await self._pool.execute(
                """UPDATE reorder_messages SET unsubscribed_at = COALESCE(unsubscribed_at, now())
                    WHERE id = $1 AND merchant_id = $2""",
                link.message,
                link.merchant,
            )
        return link.merchant, link.channel


__all__ = [
    "CLAIM",
    "MAX_ATTEMPTS",
    "LinkRefused",
    "MailSender",
    "Outbox",
    "OutboxPass",
    "TextSender",
    "backoff",
]
