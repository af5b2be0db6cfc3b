"""The birthday job: a pass grants every member whose occasion is due (see ``dates``), each by a
ledger operation whose id is derived from the member and the year. It runs on every node every
few minutes and from cron (``python -m gateway birthdays``), with no lock and no timer to rely
on: two passes at once, on two nodes, or a pass that crashed and runs again, grant each member
once a year, because the second operation of an id replays the first.

A pass, for each merchant's rule: the members born on each (month, day) whose occasion may be
due somewhere now (``dates.birthdays_to_read``), a page at a time in member order; for each, the
year due in the zone the rule uses, if its occasion's day had not ended before the rule was
created and the birthday was set at least ``NOTICE_DAYS`` before the occasion began; less those
already granted that year; then their grants, ``CHUNK`` at a time in the ledger's lanes (the
tills' operations are served in between), and the coupons' ``code_changed`` pushes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import asyncpg
import msgspec

from gateway.background import stop
from gateway.birthdays import dates, grants
from gateway.birthdays.rules import (
    BirthdayRule,
    RuleSpec,
    all_rules,
    delete_rule,
    get_rule,
    put_rule,
)
from gateway.errors import GatewayError, Refused
from gateway.events import MemberEventSink
from gateway.ledger import Earn, Ledger, Origin
from gateway.members import Born, birthdays_on, check_time_zone
from gateway.programme import Programmes, Reward, find_reward
from gateway.rewards import GrantedCode, granted_code
from protocol.messages import Outcome, PointsLine
from protocol.wallet import CodeChanged

log = logging.getLogger(__name__)

#: Seconds between passes on each node (jittered); ``GATEWAY_BIRTHDAY_SECONDS``.
BIRTHDAY_INTERVAL = 300.0
#: Members read per page of one birthday.
PAGE = 1000
#: Grants queued in the ledger at a time (as the expiry job does: tills are served between).
CHUNK = 200
#: A coupon whose push was not made this long after its grant is pushed by the next pass.
ANNOUNCE_AFTER = 60.0


def grant_op(member: str, year: int) -> str:
    """The id of a member's grant for ``year``: '~' and '/' are outside the client id charset,
    so no client can take it first."""
    return f"~birthday/{member}/{year}"


@dataclass(frozen=True, slots=True)
class BirthdayPass:
    """What one pass did: operations it saw applied (a concurrent pass may count the same
    grant), members due but deferred by the notice rule, coupons it pushed late."""

    granted: int = 0
    deferred: int = 0
    announced: int = 0

    def __add__(self, other: BirthdayPass) -> BirthdayPass:
        return BirthdayPass(
            self.granted + other.granted,
            self.deferred + other.deferred,
            self.announced + other.announced,
        )


def _zone(name: str | None, fallback: tzinfo) -> tzinfo:
    if name is None:
        return fallback
    try:
        return check_time_zone(name)
    except Refused:  # a zone the node's database no longer has: the programme's
        return fallback


@dataclass(frozen=True, slots=True)
class _Grant:
    """What a rule grants, read once per pass."""

    rule: BirthdayRule
    zone: tzinfo
    reward: Reward | None = None
    days: int = 0

    def op(self, member: str, year: int) -> Earn:
        origin = Origin(merchant=self.rule.merchant, channel="system")
        op = grant_op(member, year)
        if self.reward is None:
            points = self.rule.points or 0
            return Earn(
                op=op,
                member=member,
                points=points,
                origin=origin,
                kind="birthday",
                breakdown=(PointsLine(rule="birthday", points=points),),
                detail=msgspec.json.encode(("birthday", year)),
                attached=(grants.BirthdayGrant(year, "points"),),
            )
        code = GrantedCode(self.reward, self.days)
        return Earn(
            op=op,
            member=member,
            points=0,
            origin=origin,
            kind="birthday",
            breakdown=(PointsLine(rule=f"birthday:{self.reward.id}", points=0),),
            detail=msgspec.json.encode(("birthday", year, self.reward.id)),
            attached=(code, grants.BirthdayGrant(year, "reward", self.reward.id, code.code)),
        )


class Birthdays:
    """The job on one node: a pass every ``interval`` seconds (jittered; 0: only on demand),
    and ``run`` on demand (the command line)."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        programmes: Programmes,
        events: MemberEventSink,
        interval: float = BIRTHDAY_INTERVAL,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._programmes = programmes
        self._events = events
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the rule
    async def rule(self, merchant: str) -> BirthdayRule | None:
        return await get_rule(self._pool, merchant)

    async def put_rule(self, merchant: str, spec: RuleSpec) -> BirthdayRule:
        """Create or replace the merchant's rule; refused (nothing changed) with
        ``invalid_field``, ``reward_not_found`` or ``time_zone_unknown``."""
        return await put_rule(self._pool, merchant, spec)

    async def delete_rule(self, merchant: str) -> bool:
        return await delete_rule(self._pool, merchant)

    # ------------------------------------------------------------------ the job
    async def run(self, now: datetime | None = None, merchant: str | None = None) -> BirthdayPass:
        """One pass as of ``now`` (default: this node's clock; tests give another), over every
        merchant's rule or ``merchant``'s only."""
        now = datetime.now(UTC) if now is None else now
        done = BirthdayPass(announced=await self._announce_late())
        for rule in await all_rules(self._pool, merchant):
            try:
                done += await self._run_rule(rule, now)
            except GatewayError as exc:  # this merchant's pass stops; the others go on
                log.warning("birthday pass of %s stopped: %s", rule.merchant, exc)
        return done

    async def _what(self, rule: BirthdayRule) -> _Grant | None:
        zone = _zone(rule.time_zone, UTC)
        if rule.grant == "points":
            return _Grant(rule, zone)
        assert rule.reward is not None
        reward = await find_reward(self._pool, rule.merchant, rule.reward)
        if reward is None or not reward.active:
            log.warning(
                "birthday rule of %s grants reward %r, which was withdrawn: nothing granted",
                rule.merchant,
                rule.reward,
            )
            return None
        programme = await self._programmes.get(rule.merchant)
        return _Grant(rule, zone, reward, reward.valid_days or programme.code_valid_days)

    async def _run_rule(self, rule: BirthdayRule, now: datetime) -> BirthdayPass:
        what = await self._what(rule)
        if what is None:
            return BirthdayPass()
        done = BirthdayPass()
        for month, day in dates.birthdays_to_read(now, rule.timing):
            after = ""
            while True:
                page = await birthdays_on(self._pool, rule.merchant, month, day, after, PAGE)
                if not page:
                    break
                done += await self._grant_page(what, month, day, page, now)
                if len(page) < PAGE:
                    break
                after = page[-1].member
        return done

    async def _grant_page(
        self, what: _Grant, month: int, day: int, page: list[Born], now: datetime
    ) -> BirthdayPass:
        rule = what.rule
        due: list[tuple[str, int]] = []
        deferred = 0
        for born in page:
            zone = _zone(born.time_zone, what.zone) if rule.zone == "member" else what.zone
            found = dates.due(month, day, rule.timing, zone, now)
            if found is None:
                continue
            year, occasion = found
            start = dates.occasion_start(occasion, zone)
            if start + timedelta(days=1) <= rule.since:
                continue  # the occasion's day had ended before the rule existed
            if born.set_at is not None and born.set_at > start - dates.NOTICE:
                deferred += 1  # set or changed too close to it: first counts next year
                continue
            due.append((born.member, year))
        years = sorted({y for _, y in due})
        have = await grants.granted(self._pool, rule.merchant, [m for m, _ in due], years)
        todo = [what.op(m, y) for m, y in due if (m, y) not in have]
        granted = 0
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            outcomes = await asyncio.gather(
                *(self._ledger.submit(op) for op in chunk), return_exceptions=True
            )
            applied = [op for op, o in zip(chunk, outcomes, strict=True) if _ok(o)]
            granted += len(applied)
            if what.reward is not None:
                await self._announce(rule.merchant, [op.op for op in applied])
        return BirthdayPass(granted=granted, deferred=deferred)

    async def _announce(self, merchant: str, ops: list[str]) -> int:
        """Push each granted coupon to its member's watchers (``code_changed``), then mark it
        announced. A push is best effort: one lost with a crash before the mark is made by a
        later pass (``_announce_late``); one made twice shows the same code twice."""
        told = []
        for op in ops:
            code = await granted_code(self._pool, merchant, op)
            if code is None:
                continue
            await self._events.publish(
                merchant, code.member, CodeChanged(member=code.member, code=code)
            )
            told.append(op)
        await grants.mark_announced(self._pool, merchant, told)
        return len(told)

    async def _announce_late(self) -> int:
        late = await grants.unannounced(self._pool, ANNOUNCE_AFTER, PAGE)
        n = 0
        for merchant in sorted({g.merchant for g in late}):
            n += await self._announce(merchant, [g.op for g in late if g.merchant == merchant])
        return n

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="birthdays")

    async def close(self) -> None:
        await stop(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval * random.uniform(0.5, 1.0))
            try:
                done = await self.run()
            except GatewayError as exc:  # PostgreSQL away: the next pass grants what is due
                log.warning("birthday pass failed: %s", exc)
                continue
            except Exception:
                log.exception("birthday pass failed")
                continue
            if done.granted or done.announced:
                log.info(
                    "birthdays: %d granted, %d deferred, %d pushed late",
                    done.granted,
                    done.deferred,
                    done.announced,
                )


def _ok(o: Outcome | BaseException) -> bool:
    return isinstance(o, Outcome) and o.ok


__all__ = ["BIRTHDAY_INTERVAL", "BirthdayPass", "Birthdays", "grant_op"]
