-- A use_code's op names one code: a second code redeemed under the same op is a changed
-- retry, refused (idempotency_conflict) even when two arrive at once.
CREATE UNIQUE INDEX reward_codes_redeemed_op ON reward_codes (merchant_id, redeemed_op)
    WHERE redeemed_op IS NOT NULL;
