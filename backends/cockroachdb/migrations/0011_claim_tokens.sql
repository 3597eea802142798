-- kit schema v11: claims read back after a lost acknowledgement (as backends/postgres/migrations/0011).
-- claim_token: the per-call token of the claim that took the row; claim_recovery: whether that claim took
-- it over from an expired lease. Every claim statement sets both; a claim retried after a lost
-- acknowledgement (40003, a cut connection) reads back the rows its owner holds under its token
-- (claim_read_back, served by workflows_owner_idx) instead of leaving them leased to a caller that never
-- saw them. One schema change per statement (each runs in its own transaction).
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS claim_token text;
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS claim_recovery boolean;
