-- The returns that cite a redemption: together they may restore at most what it spent, and only
-- through the returns of one sale (gateway/loyalty/sales.py).
CREATE INDEX sale_returns_by_redemption ON sale_returns (merchant_id, redemption)
    WHERE redemption IS NOT NULL;
