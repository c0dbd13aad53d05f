-- Provider keys are sealed with associated data that names where the key may be sent
-- (entry id, workspace, kind, base URL). Rows sealed before carry format 1 (entry id
-- only) until the admin API re-seals them; a row written without the column is format 1,
-- which is what older code seals with.
ALTER TABLE provider_keys
    ADD COLUMN aad_version smallint NOT NULL DEFAULT 1 CHECK (aad_version IN (1, 2));
