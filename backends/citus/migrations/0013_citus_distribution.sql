-- kit schema v13 (Citus): the per-workflow tables are distributed by workflow id and colocated, so every
-- statement about one workflow (create, checkpoint, finish, receive, replay) is a single-shard router
-- query. The shard count is the session's citus.shard_count when this migration runs (Citus' default: 32;
-- e.g. `?options=-c%20citus.shard_count%3D16` in the URL, or ALTER DATABASE ... SET citus.shard_count).
-- Coordinator tables (plain PostgreSQL tables on the coordinator): schema_migrations, workers, queues,
-- schedules, lanes, coordinator_outcomes. Distributed by other keys: call_outcomes (token), ready/queue_state/slots (lane), dedup
-- (dedup key), children (parent id), all colocated with workflows.

-- One live workflow per (queue, dedup id) cannot be a unique index over workflows any more (a unique index
-- must contain the distribution column): the dedup table below holds that key instead.
DROP INDEX {schema}.workflows_dedup_idx;

SELECT create_distributed_table('{schema}.workflows', 'workflow_id', colocate_with => 'none');
SELECT create_distributed_table('{schema}.steps', 'workflow_id', colocate_with => '{schema}.workflows');
SELECT create_distributed_table('{schema}.messages', 'workflow_id', colocate_with => '{schema}.workflows');
SELECT create_distributed_table('{schema}.events', 'workflow_id', colocate_with => '{schema}.workflows');
SELECT create_distributed_table('{schema}.streams', 'workflow_id', colocate_with => '{schema}.workflows');
-- Answers of control operations (v12), by token: the recording INSERT is a router statement of the operation's
-- own transaction (two-phase commit when the token's shard is on another node), so the answer commits with the
-- writes or not at all. A coordinator table would not do: a transaction that wrote one worker and a plain
-- coordinator table commits the worker first, then the coordinator, not atomically.
SELECT create_distributed_table('{schema}.call_outcomes', 'token', colocate_with => '{schema}.workflows');
-- The answers of operations that write only coordinator tables (schedule_define) or whose commit decision is
-- the coordinator's (migrate) stay on the coordinator, next to what they answer for (backends/citus/outcomes.py).
CREATE TABLE {schema}.coordinator_outcomes (LIKE {schema}.call_outcomes INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {schema}.coordinator_outcomes ADD PRIMARY KEY (token);
CREATE INDEX coordinator_outcomes_created_idx ON {schema}.coordinator_outcomes (created_at);

-- The home lane of the limited queue whose slot a RUNNING workflow holds (NULL: claimed through a lane of
-- its own shard); its finish, cancel or release frees the slot in the same transaction.
ALTER TABLE {schema}.workflows ADD COLUMN held_lane text;

-- Lanes: one key per shard of workflows, found here by trying 'lane:0', 'lane:1', ... until every shard has
-- one. A workflow's ready row goes to the lane of its own shard (lane_of(workflow_id)), so an enqueue is a
-- single-shard transaction; a claim is a router query on one lane, and the lanes (shards) of a hot queue
-- are spread over every worker node.
CREATE TABLE {schema}.lanes (
    shard_id bigint PRIMARY KEY,
    lane_key text   NOT NULL UNIQUE
);
INSERT INTO {schema}.lanes (shard_id, lane_key)
SELECT DISTINCT ON (shard_id) shard_id, lane_key
  FROM (SELECT 'lane:' || n AS lane_key, n,
               get_shard_id_for_distribution_column('{schema}.workflows', 'lane:' || n) AS shard_id
          FROM generate_series(0, 100 * (SELECT count(*) FROM pg_dist_shard
                                          WHERE logicalrelid = '{schema}.workflows'::regclass)) n) k
 ORDER BY shard_id, n;

-- The lane of a key's shard (a workflow id, or a limited queue's name: its home lane). Evaluated on the
-- coordinator: use it only in VALUES lists and plain SELECTs, never inside a statement Citus pushes down.
-- (A shard split after this migration has no lane yet: its keys fall back to the first lane, which costs a
-- two-phase commit at enqueue and nothing else.)
CREATE FUNCTION {schema}.lane_of(key text) RETURNS text LANGUAGE sql STABLE STRICT AS $$
    SELECT lane_key FROM (
        SELECT lane_key, 0 AS o FROM {schema}.lanes
         WHERE shard_id = get_shard_id_for_distribution_column('{schema}.workflows', key)
        UNION ALL
        SELECT min(lane_key), 1 FROM {schema}.lanes) l
     ORDER BY o LIMIT 1
$$;

-- The limits that make a queue "limited" (claimed only through queue_claim), as in queue_limited_names.
CREATE FUNCTION {schema}.queue_is_limited(q text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM {schema}.queues
                    WHERE name = q AND (concurrency IS NOT NULL OR worker_concurrency IS NOT NULL
                                        OR partition_concurrency IS NOT NULL OR rate_count IS NOT NULL
                                        OR partitioned))
$$;

-- Where a PENDING workflow's ready row goes: the home lane of its queue when the queue is limited (all of a
-- limited queue's admission happens on one shard), else the lane of its own shard.
CREATE FUNCTION {schema}.ready_lane(workflow_id text, queue text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT {schema}.lane_of(CASE WHEN {schema}.queue_is_limited(queue) THEN queue ELSE workflow_id END)
$$;

-- Ready work: one row per PENDING workflow (a copy of what claims filter and order by), distributed by lane.
-- A claim deletes the rows it takes and moves their workflows to RUNNING in one transaction.
CREATE TABLE {schema}.ready (
    lane_key      text        NOT NULL,
    workflow_id   text        NOT NULL,
    name          text        NOT NULL,
    queue         text,
    priority      integer     NOT NULL DEFAULT 0,
    app_version   text,
    partition_key text,
    run_at        timestamptz,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (lane_key, workflow_id)
);
CREATE INDEX ready_order_idx ON {schema}.ready (lane_key, priority, created_at);
CREATE INDEX ready_queue_idx ON {schema}.ready (lane_key, queue, priority, created_at);
CREATE INDEX ready_partition_idx ON {schema}.ready (lane_key, queue, partition_key, priority, created_at)
    WHERE partition_key IS NOT NULL;
SELECT create_distributed_table('{schema}.ready', 'lane_key', colocate_with => '{schema}.workflows');

-- Limited queues, on their home lane: the claim lock and partition cursor (queue_state), and one slot per
-- workflow claimed through queue_claim (running while it runs; kept after for the rate-limit window). The
-- counts a limited claim admits by are read under the queue_state row lock on the node that holds them, so
-- a claim committed by two-phase commit is counted once its home node has committed it.
CREATE TABLE {schema}.queue_state (
    lane_key       text NOT NULL,
    queue          text NOT NULL,
    last_partition text,
    PRIMARY KEY (lane_key, queue)
);
SELECT create_distributed_table('{schema}.queue_state', 'lane_key', colocate_with => '{schema}.workflows');

CREATE TABLE {schema}.slots (
    lane_key      text        NOT NULL,
    workflow_id   text        NOT NULL,
    queue         text        NOT NULL,
    owner         text,
    partition_key text,
    running       boolean     NOT NULL,
    claimed_at    timestamptz NOT NULL,
    PRIMARY KEY (lane_key, workflow_id)
);
CREATE INDEX slots_running_idx ON {schema}.slots (lane_key, queue, partition_key) WHERE running;
CREATE INDEX slots_claimed_idx ON {schema}.slots (lane_key, queue, claimed_at);
SELECT create_distributed_table('{schema}.slots', 'lane_key', colocate_with => '{schema}.workflows');

-- One live (PENDING or RUNNING) workflow per (queue, dedup id): the row exists while its holder is live
-- (inserted with it, deleted in the same transaction as its finish or cancel), so every decision about a
-- dedup id is made on the one node that holds its row.
CREATE FUNCTION {schema}.dedup_key(queue text, dedup_id text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT length(coalesce(queue, ''))::text || ':' || coalesce(queue, '') || dedup_id
$$;
CREATE TABLE {schema}.dedup (
    dkey        text NOT NULL PRIMARY KEY,
    workflow_id text NOT NULL
);
SELECT create_distributed_table('{schema}.dedup', 'dkey', colocate_with => '{schema}.workflows');

-- Children by parent, on the parent's shard: written with the child in the transaction that checks the
-- parent's epoch, so a cancel holding the parent's row finds every child created before it.
CREATE TABLE {schema}.children (
    parent_id text NOT NULL,
    child_id  text NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
SELECT create_distributed_table('{schema}.children', 'parent_id', colocate_with => '{schema}.workflows');

-- Heartbeat in one statement: record the worker (coordinator table) and extend every lease it holds (one
-- multi-shard UPDATE, no row locks beyond the rows it changes); returns the leases still held.
CREATE FUNCTION {schema}.heartbeat(p_owner text, p_lease double precision, p_hostname text, p_pid integer)
RETURNS TABLE (workflow_id text, epoch bigint) LANGUAGE sql VOLATILE AS $$
    INSERT INTO {schema}.workers (worker_id, hostname, pid)
    SELECT p_owner, p_hostname, p_pid WHERE p_hostname IS NOT NULL
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now();
    UPDATE {schema}.workflows SET lease_expires_at = now() + make_interval(secs => p_lease)
     WHERE owner = p_owner AND status = 'RUNNING'
    RETURNING workflow_id, epoch;
$$;

-- Views: a correlated subquery from a coordinator table into a distributed one is refused, so v_workers
-- counts claims with one aggregate over workflows joined on the coordinator (same columns as before).
CREATE OR REPLACE VIEW {schema}.v_workers AS
SELECT k.worker_id,
       k.hostname,
       k.pid,
       k.started_at,
       k.heartbeat_at,
       now() - k.heartbeat_at AS heartbeat_age,
       k.heartbeat_at > now() - interval '7.5 seconds' AS alive,
       coalesce(c.claims, 0) AS claims
  FROM {schema}.workers k
  LEFT JOIN (SELECT w.owner, count(*) AS claims FROM {schema}.workflows w
              WHERE w.status = 'RUNNING' GROUP BY w.owner) c ON c.owner = k.worker_id;
