-- A use_code's op names one code: a second code redeemed under the same op is a changed
-- retry, refused (idempotency_conflict) even when two arrive at once.
--
-- Before this, one op could redeem several codes. Each later redemption of such an op keeps
-- its op with the code appended ("<op>#<code>"), so the index can be built and no redemption
-- is lost; the earliest keeps the op.
UPDATE reward_codes c
   SET redeemed_op = c.redeemed_op || '#' || c.code
 WHERE c.redeemed_op IS NOT NULL
   AND EXISTS (SELECT 1 FROM reward_codes d
                WHERE d.merchant_id = c.merchant_id AND d.redeemed_op = c.redeemed_op
                  AND (COALESCE(d.redeemed_at, '-infinity'), d.code)
                    < (COALESCE(c.redeemed_at, '-infinity'), c.code));
CREATE UNIQUE INDEX reward_codes_redeemed_op ON reward_codes (merchant_id, redeemed_op)
    WHERE redeemed_op IS NOT NULL;
