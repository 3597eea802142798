-- kit schema v2: observability views (a stable, documented interface: docs/observability.md) and the indexes
-- that serve the documented queries and `kit monitor`. Same views as the PostgreSQL backend's.

CREATE INDEX IF NOT EXISTS workflows_finished_idx ON {schema}.workflows (finished_at){hash_sharded}
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflows_active_queue_idx ON {schema}.workflows (queue, status, name)
    WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX IF NOT EXISTS steps_retried_idx ON {schema}.steps (finished_at){hash_sharded} WHERE attempts > 1;

CREATE OR REPLACE VIEW {schema}.v_workflows AS
SELECT w.workflow_id,
       w.name,
       w.status,
       w.queue,
       w.priority,
       w.app_version,
       w.owner,
       w.parent_id,
       w.epoch,
       w.recoveries,
       w.created_at,
       w.started_at,
       w.finished_at,
       w.lease_expires_at,
       w.finished_at - w.started_at AS duration,
       extract(epoch FROM w.finished_at - w.started_at)::float8 * 1000 AS duration_ms,
       w.error_type,
       CASE WHEN left(w.error, 1) = chr(123) THEN w.error::jsonb ->> 'message' ELSE w.error END AS error_message
  FROM {schema}.workflows w;

CREATE OR REPLACE VIEW {schema}.v_steps AS
SELECT s.workflow_id,
       s.step_id,
       s.name,
       s.attempts,
       s.epoch,
       s.started_at,
       s.finished_at,
       s.finished_at - s.started_at AS duration,
       extract(epoch FROM s.finished_at - s.started_at)::float8 * 1000 AS duration_ms,
       s.output,
       s.error IS NOT NULL AS failed,
       CASE WHEN left(s.error, 1) = chr(123) THEN s.error::jsonb ->> 'type' END AS error_type,
       CASE WHEN left(s.error, 1) = chr(123) THEN s.error::jsonb ->> 'message' ELSE s.error END AS error_message
  FROM {schema}.steps s;

CREATE OR REPLACE VIEW {schema}.v_queues AS
SELECT coalesce(w.queue, 'default') AS queue,
       count(*) FILTER (WHERE w.status = 'PENDING') AS depth,
       count(*) FILTER (WHERE w.status = 'RUNNING') AS in_flight,
       NULL::integer AS concurrency_limit,
       NULL::integer AS worker_concurrency_limit,
       NULL::double precision AS rate_limit_per_second
  FROM {schema}.workflows w
 WHERE w.status IN ('PENDING', 'RUNNING')
 GROUP BY coalesce(w.queue, 'default');

CREATE OR REPLACE VIEW {schema}.v_workers AS
SELECT k.worker_id,
       k.hostname,
       k.pid,
       k.started_at,
       k.heartbeat_at,
       now() - k.heartbeat_at AS heartbeat_age,
       k.heartbeat_at > now() - interval '7.5 seconds' AS alive,
       (SELECT count(*) FROM {schema}.workflows w
         WHERE w.owner = k.worker_id AND w.status = 'RUNNING') AS claims
  FROM {schema}.workers k;
