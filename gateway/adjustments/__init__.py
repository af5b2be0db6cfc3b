"""Manual points adjustments through the admin API: points credited or debited by hand (a
goodwill gesture, a correction), each with its reason and its author, idempotent by the
caller's operation id, through the ledger like any change (pushed live, in the history).
Owns the table point_adjustments, whose row rides on the adjustment's ledger operation
(``ADJUSTMENT``). This is its public face."""

from gateway.adjustments.adjustments import (
    ADJUSTMENT,
    Adjusted,
    Adjustment,
    AdjustmentRows,
    Adjustments,
)

#: The row kinds this package writes in the ledger's transactions.
ATTACHMENTS = (ADJUSTMENT,)

__all__ = [
    "ADJUSTMENT",
    "ATTACHMENTS",
    "Adjusted",
    "Adjustment",
    "AdjustmentRows",
    "Adjustments",
]
