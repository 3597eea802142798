-- kit schema v7: queue claim bookkeeping (claimed_at: when the current claim of a queued workflow was made;
-- last_partition: where the last claim of a partitioned queue stopped).
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE {schema}.queues ADD COLUMN IF NOT EXISTS last_partition text;
CREATE INDEX IF NOT EXISTS workflows_queue_claimed_idx ON {schema}.workflows (queue, claimed_at){hash_sharded}
    WHERE queue IS NOT NULL AND claimed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflows_default_pending_idx ON {schema}.workflows (priority, created_at){hash_sharded}
    WHERE status = 'PENDING' AND queue IS NULL;
