"""The reminders' messages: a pass on every node takes the reminders whose next message is
due (FOR UPDATE SKIP LOCKED: another node takes the next ones) and, in the same transaction,
writes each message's outbox row (``reorder_messages``, delivery id "<reminder>/<step>",
unique) and moves the reminder to its next step, so a step is made once whatever runs.

For each due reminder, in order:

1. Quiet hours, in the member's time zone (else the loop's): one due then waits for their end.
2. A control-group reminder makes no message; its steps advance the same.
3. The cap: a member with ``cap.messages`` messages (pending or sent) in the last
   ``cap.days`` days across the merchant's loops waits until the oldest of them leaves that
   window.
4. The channel: the first of the loop's the member consents to and has an address for; with
   none, the step is recorded as ``skipped`` (it is counted, not sent).
5. The templates, rendered with the member's name, the product's, the incentive and the
   signed cart link.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

import asyncpg
import msgspec

from gateway.catalogue import Catalogue
from gateway.errors import Refused
from gateway.members import Reach, check_time_zone, reach
from gateway.reorder.links import LinkSigner
from gateway.reorder.loops import Loop, LoopSpec, QuietHours, all_loops, incentive_text
from gateway.reorder.templates import TemplateError, render
from gateway.store.db import translate_errors

#: Reminders taken per transaction.
BATCH = 200
#: Seconds a cart link works when the loop has no incentive (else its attribution window).
LINK_TTL = 30 * 86400.0

_CLAIM = """
SELECT id, merchant_id, loop_id, member_id, sku, step, control
  FROM reorder_reminders
 WHERE state = 'scheduled' AND next_at <= $1 AND ($2::text IS NULL OR merchant_id = $2)
 ORDER BY next_at LIMIT $3
   FOR UPDATE SKIP LOCKED
"""

_RECENT = """
SELECT member_id, created_at FROM reorder_messages
 WHERE merchant_id = $1 AND member_id = ANY($2::text[]) AND created_at > $3
   AND state IN ('pending', 'sending', 'sent')
"""

_MESSAGE = """
INSERT INTO reorder_messages (delivery_id, merchant_id, member_id, reminder_id, loop_id, sku,
                              step, channel, to_address, subject, body_text, body_html, state,
                              next_attempt_at, last_error, created_at, incentive)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $16::jsonb)
ON CONFLICT (delivery_id) DO NOTHING
"""

_ADVANCE = """
UPDATE reorder_reminders
   SET step = $2, next_at = $3,
       state = CASE WHEN $3::timestamptz IS NULL THEN 'done' ELSE state END,
       ended_at = CASE WHEN $3::timestamptz IS NULL THEN now() ELSE ended_at END
 WHERE id = $1
"""

_WAIT = "UPDATE reorder_reminders SET next_at = $2 WHERE id = $1"


@dataclass(frozen=True, slots=True)
class DispatchPass:
    """Messages made, control steps, steps skipped (no consent or address), reminders that
    wait (quiet hours, cap)."""

    made: int = 0
    control: int = 0
    skipped: int = 0
    waiting: int = 0

    def __add__(self, o: DispatchPass) -> DispatchPass:
        return DispatchPass(
            self.made + o.made,
            self.control + o.control,
            self.skipped + o.skipped,
            self.waiting + o.waiting,
        )


def _zone(name: str | None, fallback: str) -> tzinfo:
    for candidate in (name, fallback):
        if candidate:
            try:
                return check_time_zone(candidate)
            except Refused:  # a zone the node's database no longer has
                continue
    return UTC


def quiet_until(q: QuietHours | None, zone: tzinfo, now: datetime) -> datetime | None:
    """The end of the quiet hours ``now`` falls in (None: not quiet)."""
    if q is None:
        return None
    local = now.astimezone(zone)
    start, end = time.fromisoformat(q.start), time.fromisoformat(q.end)
    t = local.time()
    quiet = start <= t < end if start < end else (t >= start or t < end)
    if not quiet:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    # the wall-clock end in the zone (a DST gap moves it by its length: fold 0)
    return datetime.combine(day, end, tzinfo=zone).astimezone(UTC)


def capped_until(spec: LoopSpec, recent: list[datetime], now: datetime) -> datetime | None:
    """When the member may get a message again under the loop's cap (None: now)."""
    window = [t for t in recent if t > now - timedelta(days=spec.cap.days)]
    if len(window) < spec.cap.messages:
        return None
    window.sort()
    return window[len(window) - spec.cap.messages] + timedelta(days=spec.cap.days)


def channel_for(spec: LoopSpec, who: Reach | None) -> tuple[str, str] | None:
    """(channel, address) of the first of the loop's channels the member consents to."""
    if who is None:
        return None
    for ch in spec.channels:
        if ch == "email" and who.consent_email and who.email:
            return ch, who.email
        if ch == "sms" and who.consent_sms and who.phone:
            return ch, who.phone
    return None


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool[Any], catalogue: Catalogue, links: LinkSigner) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._links = links

    async def run(self, now: datetime | None = None, merchant: str | None = None) -> DispatchPass:
        """Every message due as of ``now`` (default: this node's clock)."""
        now = datetime.now(UTC) if now is None else now
        loops = {(lp.merchant, lp.loop): lp for lp in await all_loops(self._pool, merchant)}
        done = DispatchPass()
        while True:
            n, step = await self._batch(loops, now, merchant)
            done += step
            if n < BATCH:
                return done

    async def _batch(
        self, loops: dict[tuple[str, str], Loop], now: datetime, merchant: str | None
    ) -> tuple[int, DispatchPass]:
        with translate_errors("reorder messages write"):
            async with self._pool.acquire() as conn, conn.transaction():
                due = await conn.fetch(_CLAIM, now, merchant, BATCH)
                by_merchant: dict[str, list[Any]] = defaultdict(list)
                for r in due:
                    by_merchant[r["merchant_id"]].append(r)
                done = DispatchPass()
                for m, rows in by_merchant.items():
                    done += await self._merchant(conn, m, rows, loops, now)
        return len(due), done

    async def _merchant(
        self,
        conn: Any,
        merchant: str,
        rows: list[Any],
        loops: dict[tuple[str, str], Loop],
        now: datetime,
    ) -> DispatchPass:
        members = sorted({r["member_id"] for r in rows})
        who = await reach(conn, merchant, members)
        recent: dict[str, list[datetime]] = defaultdict(list)
        for r in await conn.fetch(_RECENT, merchant, members, now - timedelta(days=365)):
            recent[r["member_id"]].append(r["created_at"])
        names: dict[str, str] = {}
        incentives: dict[str, str] = {}
        made = control = skipped = waiting = 0
        for r in rows:
            loop = loops.get((merchant, r["loop_id"]))
            if loop is None or not loop.spec.active:
                continue  # the scheduler's next pass ends it
            spec = loop.spec
            member = who.get(r["member_id"])
            zone = _zone(member.time_zone if member else None, spec.time_zone)
            wait = quiet_until(spec.quiet_hours, zone, now)
            if wait is None and not r["control"]:
                wait = capped_until(spec, recent[r["member_id"]], now)
            if wait is not None:
                await conn.execute(_WAIT, r["id"], wait)
                waiting += 1
                continue
            step = r["step"]
            nxt = (
                now + timedelta(days=spec.messages[step + 1].spacing_days)
                if step + 1 < len(spec.messages)
                else None
            )
            if r["control"]:
                control += 1
            else:
                if r["sku"] not in names:
                    p = await self._catalogue.product(merchant, r["sku"])
                    names[r["sku"]] = p.name if p is not None else r["sku"]
                if loop.loop not in incentives:
                    incentives[loop.loop] = await incentive_text(self._pool, loop)
                state = await self._message(
                    conn, r, loop, member, names[r["sku"]], incentives[loop.loop], now
                )
                if state == "skipped":
                    skipped += 1
                else:
                    made += 1
                    recent[r["member_id"]].append(now)
            await conn.execute(_ADVANCE, r["id"], step + 1, nxt)
        return DispatchPass(made, control, skipped, waiting)

    async def _message(
        self,
        conn: Any,
        r: Any,
        loop: Loop,
        member: Reach | None,
        product: str,
        incentive: str,
        now: datetime,
    ) -> str:
        spec = loop.spec
        msg = spec.messages[r["step"]]
        where = channel_for(spec, member)
        ttl = LINK_TTL if spec.incentive is None else spec.incentive.attribution_days * 86400.0
        link = self._links.cart(loop.merchant, r["member_id"], r["sku"], r["id"], ttl)
        state, error = "pending", None
        subject = text = ""
        html = None
        if where is None:
            state, error = "skipped", "no consent or no address for the loop's channels"
            where = (spec.channels[0], "")
        else:
            values = {
                "name": member.name if member else "",
                "product": product,
                "incentive": incentive,
                "link": link,
            }
            try:
                out = render(
                    msg.subject, msg.text, msg.html if where[0] == "email" else None, values
                )
                subject, text, html = out.subject, out.text, out.html
            except TemplateError as exc:  # checked at save: a value the sample did not have
                state, error = "failed", f"template: {exc}"
        await conn.execute(
            _MESSAGE,
            f"{r['id']}/{r['step']}",
            loop.merchant,
            r["member_id"],
            r["id"],
            loop.loop,
            r["sku"],
            r["step"],
            where[0],
            where[1],
            subject,
            text,
            html,
            state,
            now,
            error,
            msgspec.json.encode(spec.incentive).decode(),
        )
        return state


__all__ = ["BATCH", "DispatchPass", "Dispatcher", "capped_until", "channel_for", "quiet_until"]
