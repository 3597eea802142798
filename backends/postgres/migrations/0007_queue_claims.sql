-- kit schema v7: queue claim bookkeeping.
-- claimed_at: when the current claim of a queued workflow was made (a release and re-claim is a new start
-- for rate limits; a recovery of an expired lease is not). last_partition: where the last claim of a
-- partitioned queue stopped, so the next one continues from there (every tenant gets its turn even with
-- more tenants than one claim walks).
ALTER TABLE {schema}.workflows ADD COLUMN claimed_at timestamptz;
CREATE INDEX workflows_queue_claimed_idx ON {schema}.workflows (queue, claimed_at)
    WHERE queue IS NOT NULL AND claimed_at IS NOT NULL;
ALTER TABLE {schema}.queues ADD COLUMN last_partition text;
-- Ready work of the default queue, apart from the named queues' backlogs.
CREATE INDEX workflows_default_pending_idx ON {schema}.workflows (priority, created_at)
    WHERE status = 'PENDING' AND queue IS NULL;
