-- The ledger writes a batch as one autocommitted statement guarded by the versions it read;
-- this aborts that statement (SQLSTATE 40001, serialization_failure) when a guard failed, so
-- the engine re-reads and re-applies the batch. Nothing of the statement is kept.
CREATE FUNCTION ledger_guard(ok boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION 'ledger batch conflict: re-read and retry' USING ERRCODE = '40001';
    END IF;
    RETURN true;
END $$;
