-- A code keeps the reward's terms as issued: what it is worth (kind, value, sku) and its name
-- are stored with the code, so a later edit of the catalogue row does not change codes
-- already paid for. Before this, reads joined the catalogue.
ALTER TABLE reward_codes
    ADD COLUMN name  text,
    ADD COLUMN kind  text CHECK (kind IN ('amount_off', 'percent_off', 'free_item')),
    ADD COLUMN value bigint CHECK (value >= 0),
    ADD COLUMN sku   text;

-- Codes issued before this: the catalogue's terms now, the best there is (an edit made since
-- such a code was issued cannot be told apart). A code whose reward row is gone keeps NULLs,
-- read as before when the catalogue had no row (no name, no kind, value 0).
UPDATE reward_codes c
   SET name = r.name, kind = r.kind, value = r.value, sku = r.sku
  FROM rewards r
 WHERE r.merchant_id = c.merchant_id AND r.id = c.reward_id;

-- Nodes of the previous release, still running while a release with this migration rolls
-- out, issue codes without the terms: they are filled from the catalogue as the row is
-- inserted, so those codes are frozen too. The current code always writes the terms.
CREATE FUNCTION reward_codes_terms_as_issued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IS NULL THEN
        SELECT r.name, r.kind, r.value, r.sku INTO NEW.name, NEW.kind, NEW.value, NEW.sku
          FROM rewards r WHERE r.merchant_id = NEW.merchant_id AND r.id = NEW.reward_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reward_codes_terms BEFORE INSERT ON reward_codes
    FOR EACH ROW EXECUTE FUNCTION reward_codes_terms_as_issued();
