"""Proof of a new email address or phone number before it becomes the member's: a one-time code
sent there (through the ``ContactSender`` the node is given), confirmed within its lifetime and
a few attempts. Only then does the address replace the member's address of that kind, for
every channel: the old one no longer finds the member.

The answer to a request is the same whoever holds the address (an app must not learn which
addresses are enrolled); whether it already identifies another member is told only to the one
who proved it is theirs. A code is kept as a keyed digest only, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import asyncpg

from gateway.errors import Refused, StoreUnavailable
from gateway.members import directory
from gateway.members.enrolment import identities
from gateway.members.profiles import Profiles
from gateway.programme import Programmes
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.wallet import VERIFICATION_DIGITS, Profile, VerificationSent

Contact = Literal["email", "phone"]

#: How long a code may be used.
CODE_TTL = timedelta(minutes=10)
#: Wrong codes tried before the code is spent.
MAX_ATTEMPTS = 5
#: Codes sent per member and kind within ``SEND_WINDOW``.
MAX_SENDS = 5
SEND_WINDOW = timedelta(hours=1)


class ContactSender(Protocol):
    """Delivers a verification code (``gateway.notify``: email over SMTP, SMS over HTTP)."""

    async def send_code(self, merchant: str, contact: Contact, to: str, code: str) -> None:
        """Raises ``StoreUnavailable`` (retryable) when it could not be sent."""
        ...


def mask(contact: Contact, to: str) -> str:
    """The address as the reply shows it: ``a***@example.org``, ``+1******2671``."""
    if contact == "email":
        local, _, domain = to.partition("@")
        return f"{local[:1]}***@{domain}"
    return to[:2] + "*" * max(0, len(to) - 6) + to[-4:]


_REQUEST = """
INSERT INTO contact_verifications (merchant_id, member_id, kind, value, digest, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + $6::interval)
ON CONFLICT (member_id, kind) DO UPDATE SET
    value = EXCLUDED.value, digest = EXCLUDED.digest, expires_at = EXCLUDED.expires_at,
    attempts = 0, consumed_at = NULL, created_at = now(),
    sends = CASE WHEN contact_verifications.window_start > now() - $7::interval
                 THEN contact_verifications.sends + 1 ELSE 1 END,
    window_start = CASE WHEN contact_verifications.window_start > now() - $7::interval
                        THEN contact_verifications.window_start ELSE now() END
 WHERE contact_verifications.window_start <= now() - $7::interval
    OR contact_verifications.sends < $8
RETURNING expires_at
"""

_PENDING = """
SELECT value, digest, expires_at > now() AS live, attempts, consumed_at IS NOT NULL AS used
  FROM contact_verifications
 WHERE merchant_id = $1 AND member_id = $2 AND kind = $3
   FOR UPDATE
"""


class ContactProofs:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        programmes: Programmes,
        profiles: Profiles,
        sender: ContactSender | None,
        secret: str,
    ) -> None:
        self._pool = pool
        self._programmes = programmes
        self._profiles = profiles
        self._sender = sender
        self._key = hashlib.sha256(b"contact-verification\x00" + secret.encode()).digest()

    def _digest(self, member: str, contact: Contact, value: str, code: str) -> bytes:
        msg = "\x00".join((member, contact, value, code)).encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    async def _normalised(self, merchant: str, contact: Contact, raw: str) -> str:
        programme = await self._programmes.get(merchant)
        ids = identities(programme, **{contact: raw})
        return ids[contact]

    async def request(
        self, merchant: str, member: str, contact: Contact, raw: str
    ) -> VerificationSent:
        """Send a code to the address; a new request replaces the code pending."""
        if self._sender is None:
            raise StoreUnavailable("this node sends no verification codes (no sender set)")
        value = await self._normalised(merchant, contact, raw)
        who = (await self._profiles.view(merchant, member)).member
        code = f"{secrets.randbelow(10**VERIFICATION_DIGITS):0{VERIFICATION_DIGITS}d}"
        with translate_errors("verification"):
            expires = await self._pool.fetchval(
                _REQUEST,
                merchant,
                who,
                contact,
                value,
                self._digest(who, contact, value, code),
                CODE_TTL,
                SEND_WINDOW,
                MAX_SENDS,
            )
        if expires is None:
            raise Refused(
                f"at most {MAX_SENDS} codes an hour; try again later", ErrorCode.RATE_LIMITED
            )
        await self._sender.send_code(merchant, contact, value, code)
        return VerificationSent(
            contact=contact, to=mask(contact, value), expires_at=epoch_ms(expires)
        )

    async def confirm(
        self, merchant: str, member: str, contact: Contact, raw: str, code: str
    ) -> Profile:
        """Make the proven address the member's (see the module doc)."""
        value = await self._normalised(merchant, contact, raw)
        who = (await self._profiles.view(merchant, member)).member
        failed = Refused("", ErrorCode.VERIFICATION_FAILED)
        with translate_errors("verification"):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_PENDING, merchant, who, contact)
                if row is None or not row["live"] or row["value"] != value:
                    raise failed
                right = hmac.compare_digest(
                    bytes(row["digest"]), self._digest(who, contact, value, code)
                )
                if row["used"]:
                    # The same right code again within its lifetime (a retry after a lost
                    # reply) answers as the first did and changes nothing.
                    if not right:
                        raise failed
                    repeat = True
                elif row["attempts"] >= MAX_ATTEMPTS:
                    raise failed
                elif right:
                    repeat = False
                    await self._take(conn, merchant, who, contact, value)
                else:  # counted under the row's lock: concurrent guesses count too
                    await conn.execute(
                        """UPDATE contact_verifications SET attempts = attempts + 1
                            WHERE merchant_id = $1 AND member_id = $2 AND kind = $3""",
                        merchant,
                        who,
                        contact,
                    )
        if not right:
            raise failed
        if repeat:
            return await self._profiles.view(merchant, who)
        return await self._profiles.changed(merchant, who)

    async def _take(
        self, conn: Any, merchant: str, member: str, contact: Contact, value: str
    ) -> None:
        holder = await directory.find_member(conn, merchant, contact, value)
        if holder is not None and await directory.resolve(conn, holder) != member:
            raise Refused("", ErrorCode.IDENTITY_IN_USE)
        await conn.execute(
            "DELETE FROM member_identities WHERE member_id = $1 AND kind = $2", member, contact
        )
        if holder is not None:  # a merged duplicate's: it moves to its survivor
            await conn.execute(
                """DELETE FROM member_identities
                    WHERE merchant_id = $1 AND kind = $2 AND value = $3""",
                merchant,
                contact,
                value,
            )
        await conn.execute(
            """INSERT INTO member_identities (merchant_id, kind, value, member_id)
               VALUES ($1, $2, $3, $4)""",
            merchant,
            contact,
            value,
            member,
        )
        await conn.execute(
            """UPDATE contact_verifications SET consumed_at = $4
                WHERE merchant_id = $1 AND member_id = $2 AND kind = $3""",
            merchant,
            member,
            contact,
            datetime.now(UTC),
        )
