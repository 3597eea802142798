-- kit schema v11: claims read back after a lost acknowledgement.
-- claim_token: the per-call token of the claim that took the row (workflow_claim, queue_claim); every
-- claim statement sets it. A claim whose reply was lost (the statement or COMMIT committed, then the
-- connection died) retries with the same token and first reads back the rows its owner holds under it,
-- so the claims it made are returned instead of staying leased to a caller that never saw them.
-- claim_recovery: whether that claim took the row over from an expired lease (Claim.recovery), so a
-- read-back returns exactly what the claim returned. No index: the read-back filters the owner's running
-- rows (workflows_owner_idx) by the token.
ALTER TABLE {schema}.workflows
    ADD COLUMN claim_token text,
    ADD COLUMN claim_recovery boolean;
