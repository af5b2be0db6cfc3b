"""Correctness while loading: the verdict at the end of a run.

Checks, each reported with details:

* ``balances``: every watching session's last seen balance (posted, held, available, version)
  equals the ledger's for its member, after the load stopped and the sessions caught up;
* ``replies``: every balance a POS reply carried is consistent with the ledger (same version,
  same figures; the ledger cannot be behind what it acknowledged);
* ``gaps``: every version gap a session saw was recovered (resubscribe with ``since`` returned
  the missed changes) or explicitly resynced by the server; none left unexplained;
* ``resume``: every churn reconnect got the changes it missed in order, or ``recovered=false``
  with the current balance (counted, not a failure: the protocol's explicit answer);
* ``ledger``: per member, the sum of ``ledger_entries`` deltas equals ``accounts.posted`` and
  ``accounts.held``, versions count the entries, ``held`` equals the member's active holds, and
  ``available >= 0`` (only with ``--database-url``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: (posted, held, version) as the ledger has it; available = posted - held.
LedgerRow = tuple[int, int, int]
#: (posted, held, available, version) as a client saw it.
Seen = tuple[int, int, int, int]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    samples: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "samples": self.samples}


def check_sessions(
    seen: Iterable[tuple[str, str, Seen]], ledger: Mapping[str, LedgerRow], limit: int = 5
) -> Check:
    """``seen``: (session, member, last balance seen) for every watching session."""
    n = bad = 0
    samples: list[Any] = []
    for session, member, (posted, held, available, version) in seen:
        n += 1
        row = ledger.get(member)
        want = None if row is None else (row[0], row[1], row[0] - row[1], row[2])
        if want != (posted, held, available, version):
            bad += 1
            if len(samples) < limit:
                samples.append(
                    {
                        "session": session,
                        "member": member,
                        "seen": [posted, held, available, version],
                        "ledger": want,
                    }
                )
    if n == 0:
        return Check("balances", True, "no watching sessions in this run")
    if bad:
        return Check(
            "balances",
            False,
            f"{bad} of {n} sessions end on a balance that differs from the ledger",
            samples,
        )
    return Check("balances", True, f"all {n} sessions end on the ledger's balance")


def check_replies(
    last_replies: Mapping[str, Seen], ledger: Mapping[str, LedgerRow], limit: int = 5
) -> Check:
    """``last_replies``: per member, the newest balance any POS reply carried."""
    bad = behind = 0
    samples: list[Any] = []
    for member, (posted, held, available, version) in last_replies.items():
        row = ledger.get(member)
        if (
            row is None
            or row[2] < version
            or (
                row[2] == version and (row[0], row[1], row[0] - row[1]) != (posted, held, available)
            )
        ):
            bad += 1
            if len(samples) < limit:
                samples.append(
                    {"member": member, "reply": [posted, held, available, version], "ledger": row}
                )
        elif row[2] > version:
            behind += 1  # changes whose reply we never read (timeouts), or other writers
    n = len(last_replies)
    if not n:
        return Check("replies", True, "no POS replies carried balances")
    if bad:
        return Check(
            "replies", False, f"{bad} of {n} members: a reply disagrees with the ledger", samples
        )
    extra = (
        f"; {behind} members changed after the last reply read (timeouts or other writers)"
        if behind
        else ""
    )
    return Check("replies", True, f"replies for {n} members agree with the ledger{extra}")


def check_gaps(gaps: int, recovered: int, resynced: int) -> Check:
    unrecovered = gaps - recovered - resynced
    if unrecovered > 0:
        return Check("gaps", False, f"{unrecovered} of {gaps} version gaps were never recovered")
    if gaps == 0:
        return Check("gaps", True, "no version gaps seen")
    return Check(
        "gaps",
        True,
        f"{gaps} gaps seen: {recovered} recovered with missed changes, {resynced} resynced",
    )


def check_resume(resumes: int, recovered: int, not_recovered: int, broken: int) -> Check:
    if resumes == 0:
        return Check("resume", True, "no reconnects in this run")
    if broken:
        return Check(
            "resume", False, f"{broken} of {resumes} resumes returned missed changes with holes"
        )
    return Check(
        "resume",
        True,
        f"{resumes} resumes: {recovered} recovered every missed change, "
        f"{not_recovered} got recovered=false with the current balance",
    )


def check_ledger(violations: list[dict[str, Any]], members: int) -> Check:
    if violations:
        return Check(
            "ledger", False, f"{len(violations)} members break a ledger invariant", violations[:5]
        )
    return Check(
        "ledger",
        True,
        f"invariants hold for {members} members (entries sum to balances, available >= 0)",
    )


def verdict(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}


# ------------------------------------------------------------------------- ledger reads

LEDGER_ROWS = (
    "SELECT member_id, posted, held, version FROM accounts WHERE member_id = ANY($1::text[])"
)

INVARIANTS = """
WITH e AS (
    SELECT member_id, sum(posted_delta) AS p, sum(held_delta) AS h, count(*) AS n, max(version) AS v
    FROM ledger_entries WHERE member_id = ANY($1::text[]) GROUP BY member_id),
h AS (
    SELECT member_id, sum(amount) AS held FROM holds
    WHERE member_id = ANY($1::text[]) AND status = 'active' GROUP BY member_id)
SELECT a.member_id, a.posted, a.held, a.version,
       coalesce(e.p, 0) AS entries_posted, coalesce(e.h, 0) AS entries_held,
       coalesce(e.n, 0) AS entries, coalesce(e.v, 0) AS max_version,
       coalesce(h.held, 0) AS active_holds
FROM accounts a LEFT JOIN e USING (member_id) LEFT JOIN h USING (member_id)
WHERE a.member_id = ANY($1::text[])
  AND (a.posted <> coalesce(e.p, 0) OR a.held <> coalesce(e.h, 0)
       OR a.version <> coalesce(e.n, 0) OR a.version <> coalesce(e.v, 0)
       OR a.held <> coalesce(h.held, 0) OR a.posted - a.held < 0)
LIMIT 100
"""


async def ledger_from_db(
    dsn: str, members: list[str], invariants: bool = True
) -> tuple[dict[str, LedgerRow], list[dict[str, Any]]]:
    """Balances and invariant violations for ``members``, straight from PostgreSQL."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(LEDGER_ROWS, members)
        bad = await conn.fetch(INVARIANTS, members) if invariants else []
    finally:
        await conn.close()
    ledger = {r["member_id"]: (r["posted"], r["held"], r["version"]) for r in rows}
    return ledger, [dict(r) for r in bad]
