"""Birthday rewards: a merchant's rule (points, or a reward as a code that costs no points; on
the day or at the start of the birth month; in the member's time zone or the programme's) and
the job that grants it, exactly once per member and year, on every node and from cron. Owns
the tables birthday_rules and birthday_grants; a grant's row rides on its ledger operation
(``BIRTHDAY_GRANT``). This is its public face."""

from gateway.birthdays.dates import (
    GRACE_DAYS,
    NOTICE_DAYS,
    Timing,
    birthdays_to_read,
    due,
    occasion,
)
from gateway.birthdays.grants import BIRTHDAY_GRANT, BirthdayRows
from gateway.birthdays.job import BIRTHDAY_INTERVAL, BirthdayPass, Birthdays, grant_op
from gateway.birthdays.rules import BirthdayRule, Grant, RuleSpec, Zone

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (BIRTHDAY_GRANT,)

__all__ = [
    "ATTACHMENTS",
    "BIRTHDAY_GRANT",
    "BIRTHDAY_INTERVAL",
    "GRACE_DAYS",
    "NOTICE_DAYS",
    "BirthdayPass",
    "BirthdayRows",
    "BirthdayRule",
    "Birthdays",
    "Grant",
    "RuleSpec",
    "Timing",
    "Zone",
    "birthdays_to_read",
    "due",
    "grant_op",
    "occasion",
]
