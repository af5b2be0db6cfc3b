-- An erased member's account (GDPR erase): its entries and balance stay, so the ledger still
-- adds up, but the ledger applies no operation to it any more except hold expiry.
ALTER TABLE accounts ADD COLUMN closed_at timestamptz;
