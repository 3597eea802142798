-- kit schema v4: flow-controlled queues (limits, priority, delay, deduplication, partitions).

ALTER TABLE {schema}.workflows
    ADD COLUMN dedup_id      text,
    ADD COLUMN run_at        timestamptz,  -- not claimable before this time (delayed start)
    ADD COLUMN partition_key text;         -- tenant of a partitioned queue

-- One live workflow per (queue, dedup id): the key leaves the index when the workflow ends.
CREATE UNIQUE INDEX workflows_dedup_idx ON {schema}.workflows (coalesce(queue, ''), dedup_id)
    WHERE dedup_id IS NOT NULL AND status IN ('PENDING', 'RUNNING');
-- Claims of a named queue: its ready work by priority, then age.
CREATE INDEX workflows_queue_pending_idx ON {schema}.workflows (queue, priority, created_at)
    WHERE status = 'PENDING';
-- Partitioned queues: the head of each tenant's backlog (loose index scan over partition keys).
CREATE INDEX workflows_partition_pending_idx ON {schema}.workflows (queue, partition_key, priority, created_at)
    WHERE status = 'PENDING' AND partition_key IS NOT NULL;
-- Limits: in-flight work per queue and tenant, and starts inside the rate-limit window.
CREATE INDEX workflows_queue_running_idx ON {schema}.workflows (queue, partition_key)
    WHERE status = 'RUNNING';
CREATE INDEX workflows_queue_started_idx ON {schema}.workflows (queue, started_at)
    WHERE queue IS NOT NULL AND started_at IS NOT NULL;

-- Queue definitions, written by the applications that declare them (app.queue(...)); the row is also
-- the serialisation point of claims under a global limit (locked FOR UPDATE SKIP LOCKED).
CREATE TABLE {schema}.queues (
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

-- The observability view now reports the declared limits (same columns as before, two appended).
CREATE OR REPLACE VIEW {schema}.v_queues AS
SELECT coalesce(a.queue, q.name) AS queue,
       coalesce(a.depth, 0) AS depth,
       coalesce(a.in_flight, 0) AS in_flight,
       q.concurrency AS concurrency_limit,
       q.worker_concurrency AS worker_concurrency_limit,
       CASE WHEN q.rate_count IS NOT NULL AND q.rate_period > 0 THEN q.rate_count / q.rate_period END
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
