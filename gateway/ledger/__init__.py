"""The points ledger: two-phase holds, group commit, idempotency, outbox, expiry."""
