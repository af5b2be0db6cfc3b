-- The shopper's wallet: the profile a member edits itself (date of birth for the birthday
-- reward, marketing consent per channel with when and where it was given, a preferred store,
-- a time zone), the one-time codes that prove a new email or phone, and a stable order of a
-- member's reward codes for paging.

-- Nullable columns without defaults: no table rewrite, and nodes of the previous release
-- write rows as before (all unset).
ALTER TABLE member_profiles
    ADD COLUMN birth_month          smallint,
    ADD COLUMN birth_day            smallint,
    ADD COLUMN birth_year           smallint,
    ADD COLUMN consent_email        boolean,
    ADD COLUMN consent_email_at     timestamptz,
    ADD COLUMN consent_email_source text,
    ADD COLUMN consent_sms          boolean,
    ADD COLUMN consent_sms_at       timestamptz,
    ADD COLUMN consent_sms_source   text,
    ADD COLUMN preferred_store      text,
    ADD COLUMN time_zone            text;
-- NOT VALID: no scan under the lock; the rows written so far hold no birthday.
ALTER TABLE member_profiles ADD CONSTRAINT member_profiles_birthday
    CHECK ((birth_month IS NULL) = (birth_day IS NULL)
           AND (birth_month IS NULL OR birth_month BETWEEN 1 AND 12)
           AND (birth_day IS NULL OR birth_day BETWEEN 1 AND 31)
           AND (birth_year IS NULL OR (birth_month IS NOT NULL AND birth_year BETWEEN 1900 AND 2100)))
    NOT VALID;

-- One pending proof per member and kind of contact; a new request replaces it. The code is
-- kept as a keyed digest only.
CREATE TABLE contact_verifications (
    merchant_id  text NOT NULL REFERENCES merchants (id),
    member_id    text NOT NULL REFERENCES members (id),
    kind         text NOT NULL CHECK (kind IN ('email', 'phone')),
    value        text NOT NULL,
    digest       bytea NOT NULL,
    expires_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    -- sends in the current window (``window_start`` .. one hour later), across requests
    sends        integer NOT NULL DEFAULT 1,
    window_start timestamptz NOT NULL DEFAULT now(),
    consumed_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, kind)
);

-- Codes listed newest first, paged by this sequence (stable under concurrent issues). Adding
-- an identity column fills it for the rows there: reward_codes is rewritten under its lock,
-- once (one row per code redeemed so far).
ALTER TABLE reward_codes ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX reward_codes_by_member_seq ON reward_codes (member_id, seq DESC);
