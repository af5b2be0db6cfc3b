"""The points ledger: the group-commit engine, the balance rules, the read path, the outbox
relay, the hold sweeper and the cache rebuild; and what other packages may ask of its
accounts and recorded operations. This is its public face: nothing outside the package imports
its submodules, and nothing outside it spells its tables (accounts, ledger_entries, holds,
operations, outbox)."""

from gateway.ledger.accounts import (
    Inactive,
    account_closing,
    available_points,
    close_accounts,
    inactive_accounts,
    lock_accounts,
    member_entries,
    merge_chain,
    merged_into,
    merged_into_it,
    open_accounts,
    survivor,
    survivors,
)
from gateway.ledger.apply import merged_refusal, refuse
from gateway.ledger.balances import balance_after, make_balance, member_balance
from gateway.ledger.engine import Ledger
from gateway.ledger.lane import BatchStats
from gateway.ledger.model import (
    Attached,
    AttachmentKind,
    Change,
    Commit,
    Earn,
    Entry,
    EntryTap,
    EventSink,
    Expire,
    Merge,
    Op,
    Origin,
    Release,
    Reserve,
    Ticket,
    decode_outcome,
)
from gateway.ledger.operations import Recorded, recorded, recorded_many
from gateway.ledger.outbox import OutboxRelay
from gateway.ledger.reads import Reads
from gateway.ledger.rebuild import rebuild_cache
from gateway.ledger.sweeper import Sweeper
from gateway.ledger.versions import Versions

__all__ = [
    "Attached",
    "AttachmentKind",
    "BatchStats",
    "Change",
    "Commit",
    "Earn",
    "Entry",
    "EntryTap",
    "EventSink",
    "Expire",
    "Inactive",
    "Ledger",
    "Merge",
    "Op",
    "Origin",
    "OutboxRelay",
    "Reads",
    "Recorded",
    "Release",
    "Reserve",
    "Sweeper",
    "Ticket",
    "Versions",
    "account_closing",
    "available_points",
    "balance_after",
    "close_accounts",
    "decode_outcome",
    "inactive_accounts",
    "lock_accounts",
    "make_balance",
    "member_balance",
    "member_entries",
    "merge_chain",
    "merged_into",
    "merged_into_it",
    "merged_refusal",
    "open_accounts",
    "rebuild_cache",
    "recorded",
    "recorded_many",
    "refuse",
    "survivor",
    "survivors",
]
