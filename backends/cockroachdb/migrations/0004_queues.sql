-- kit schema v4: flow-controlled queues (limits, priority, delay, deduplication, partitions). The columns are
-- added one statement (and transaction) each, before any index uses them: on CockroachDB a column added in a
-- transaction is not usable by later statements of that transaction.

ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS dedup_id text;
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS run_at timestamptz;  -- not claimable before this time
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS partition_key text;  -- tenant of a partitioned queue

CREATE UNIQUE INDEX IF NOT EXISTS workflows_dedup_idx ON {schema}.workflows (coalesce(queue, ''), dedup_id)
    WHERE dedup_id IS NOT NULL AND status IN ('PENDING', 'RUNNING');
CREATE INDEX IF NOT EXISTS workflows_queue_pending_idx ON {schema}.workflows (queue, priority, created_at){hash_sharded}
    WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS workflows_partition_pending_idx
    ON {schema}.workflows (queue, partition_key, priority, created_at){hash_sharded}
    WHERE status = 'PENDING' AND partition_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflows_queue_running_idx ON {schema}.workflows (queue, partition_key)
    WHERE status = 'RUNNING';
CREATE INDEX IF NOT EXISTS workflows_queue_started_idx ON {schema}.workflows (queue, started_at){hash_sharded}
    WHERE queue IS NOT NULL AND started_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {schema}.queues (
    name                  text             PRIMARY KEY,
    concurrency           integer,
    worker_concurrency    integer,
    partition_concurrency integer,
    rate_count            integer,
    rate_period           double precision,
    priority              boolean          NOT NULL DEFAULT false,
    partitioned           boolean          NOT NULL DEFAULT false,
    updated_at            timestamptz      NOT NULL DEFAULT now()
);

CREATE OR REPLACE VIEW {schema}.v_queues AS
SELECT coalesce(a.queue, q.name) AS queue,
       coalesce(a.depth, 0) AS depth,
       coalesce(a.in_flight, 0) AS in_flight,
       q.concurrency AS concurrency_limit,
       q.worker_concurrency AS worker_concurrency_limit,
       CASE WHEN q.rate_count IS NOT NULL AND q.rate_period > 0 THEN q.rate_count::float8 / q.rate_period END
           AS rate_limit_per_second,
       q.partition_concurrency AS partition_concurrency_limit,
       coalesce(q.partitioned, false) AS partitioned
  FROM (SELECT coalesce(w.queue, 'default') AS queue,
               count(*) FILTER (WHERE w.status = 'PENDING') AS depth,
               count(*) FILTER (WHERE w.status = 'RUNNING') AS in_flight
          FROM {schema}.workflows w
         WHERE w.status IN ('PENDING', 'RUNNING')
         GROUP BY coalesce(w.queue, 'default')) a
  FULL JOIN {schema}.queues q ON q.name = a.queue;
