"""The members package's data migrations: what PostgreSQL cannot do itself, applied once each
after the SQL migrations (``gateway.schema``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.members.identity import normalise_email


async def email_idna(conn: asyncpg.Connection[Any]) -> None:
    """Email identities stored with an ``xn--`` domain label before the IDNA rule (2026-11-24)
    are rewritten in the Unicode spelling ``normalise_email`` now gives: the two spellings are
    one mailbox, and the old row would match neither. A row whose new spelling another member
    of the merchant already holds (that mailbox was enrolled twice, as two members) is left as
    it was: merge the two members."""
    rows = await conn.fetch(
        "SELECT merchant_id, value FROM member_identities WHERE kind = 'email'"
        " AND value LIKE '%xn--%'"
    )
    for r in rows:
        try:
            new = normalise_email(r["value"])
        except Refused:
            continue
        if new != r["value"]:
            await conn.execute(
                """UPDATE member_identities SET value = $3
                    WHERE merchant_id = $1 AND kind = 'email' AND value = $2
                      AND NOT EXISTS (SELECT 1 FROM member_identities
                                       WHERE merchant_id = $1 AND kind = 'email'
                                         AND value = $3)""",
                r["merchant_id"],
                r["value"],
                new,
            )


#: (name, step), in order.
STEPS = [("0110_email_idna.py", email_idna)]
