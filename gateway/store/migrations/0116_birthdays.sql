-- Birthday rewards (gateway/birthdays): a merchant's rule, and each member's grant per year.
--
-- A grant is a ledger operation whose id is derived from the member and the year
-- ("~birthday/<member>/<year>"): the ledger's operations key (merchant, op id) is the unique
-- key (merchant, member, year), and the grant's row here rides on that operation (an
-- attachment written in its transaction), so points, code and grant row exist together or not
-- at all, once.

-- One rule per merchant: what is granted (points, or a reward of the catalogue as a code that
-- costs no points), when (on the day, or on the first day of the birth month) and in which
-- time zone (the member's own, else the programme's default ``time_zone``; or always the
-- programme's). ``since``: occasions whose day ended before the rule was created are not
-- granted (switching the rule on does not pay last week's birthdays); an update keeps it.
CREATE TABLE birthday_rules (
    merchant_id text PRIMARY KEY REFERENCES merchants (id),
    grant_kind  text NOT NULL CHECK (grant_kind IN ('points', 'reward')),
    points      bigint CHECK (points BETWEEN 1 AND 10000000),
    reward_id   text,
    timing      text NOT NULL CHECK (timing IN ('day', 'month')),
    zone        text NOT NULL CHECK (zone IN ('member', 'programme')),
    time_zone   text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((grant_kind = 'points') = (points IS NOT NULL)),
    CHECK ((grant_kind = 'reward') = (reward_id IS NOT NULL)),
    FOREIGN KEY (merchant_id, reward_id) REFERENCES rewards (merchant_id, id)
);

-- One grant per member and year (the year of the occasion, in the zone the rule used). Holds
-- no date of birth: only that the year's reward was given, what it was, and whether its code
-- was announced to the member's watchers (a points grant is announced by the ledger).
CREATE TABLE birthday_grants (
    merchant_id text NOT NULL REFERENCES merchants (id),
    member_id   text NOT NULL REFERENCES members (id),
    year        smallint NOT NULL,
    op_id       text NOT NULL,
    grant_kind  text NOT NULL CHECK (grant_kind IN ('points', 'reward')),
    points      bigint NOT NULL DEFAULT 0,
    reward_id   text,
    code        text,
    granted_at  timestamptz NOT NULL,
    announced   boolean NOT NULL,
    PRIMARY KEY (merchant_id, member_id, year)
);
CREATE INDEX birthday_grants_unannounced ON birthday_grants (granted_at) WHERE NOT announced;
CREATE INDEX birthday_grants_by_member ON birthday_grants (member_id);

-- When the birthday (month and day) was last set or changed: a birthday set fewer than 30 days
-- before its occasion first counts the next year (docs/loyalty.md). Stamped by a trigger, so
-- every writer records it in the statement that changes the birthday: this release's
-- profiles, a node of the previous release during a rollout, any later import. Existing rows
-- read the time of this migration (a constant default is kept in the catalogue: no rewrite),
-- so a birthday set just before it waits its 30 days too; rows added later start NULL.
ALTER TABLE member_profiles ADD COLUMN birthday_set_at timestamptz DEFAULT now();
ALTER TABLE member_profiles ALTER COLUMN birthday_set_at DROP DEFAULT;

CREATE FUNCTION member_profiles_birthday_set() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.birth_month IS NOT NULL THEN
            NEW.birthday_set_at := now();
        END IF;
    ELSIF (NEW.birth_month, NEW.birth_day) IS DISTINCT FROM (OLD.birth_month, OLD.birth_day) THEN
        NEW.birthday_set_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER member_profiles_birthday_set
    BEFORE INSERT OR UPDATE OF birth_month, birth_day ON member_profiles
    FOR EACH ROW EXECUTE FUNCTION member_profiles_birthday_set();

-- The job reads the members of one (month, day) at a time, in member order.
CREATE INDEX member_profiles_birthdays
    ON member_profiles (merchant_id, birth_month, birth_day, member_id)
    WHERE birth_month IS NOT NULL;

-- The profile's ``time_zone`` column (an IANA name, checked against the node's time zone
-- database when set) came with 0114_wallet_profile.sql; nothing to add here.

-- A birthday coupon is a code that cost no points (points 0). NOT VALID: the rows there all
-- hold points > 0.
ALTER TABLE reward_codes DROP CONSTRAINT reward_codes_points_check;
ALTER TABLE reward_codes ADD CONSTRAINT reward_codes_points_check CHECK (points >= 0) NOT VALID;

-- Birthday points are their own kind of entry (``cause.kind`` "birthday" in the push). The
-- list is 0111's with 'birthday' added: a later migration that changes it must keep it.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('earn', 'hold', 'release', 'redeem', 'expire', 'return', 'adjustment',
                    'reward', 'refund', 'merge_in', 'merge_out', 'points_expiry', 'recovery',
                    'birthday'))
    NOT VALID;
