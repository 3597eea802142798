-- Named queries of the PostgreSQL backend. Each block starts with "-- name: NAME" and a description.
-- {schema} is replaced by the quoted schema identifier; every value is a bound parameter.

-- name: workflow_create
-- Insert a workflow unless the id exists. Owned inserts start RUNNING at epoch 1 with a lease.
-- A child (parent_epoch set) is created only while its parent's epoch owns the parent (FOR KEY SHARE, like
-- a checkpoint): a cancel or takeover of the parent commits either before (no child) or after (the cancel
-- then finds the child and cancels it too).
INSERT INTO {schema}.workflows
    (workflow_id, name, status, inputs, queue, priority, app_version, parent_id, owner, epoch,
     lease_expires_at, started_at, deadline_at)
SELECT
     %(workflow_id)s, %(name)s, CASE WHEN %(owner)s::text IS NULL THEN 'PENDING' ELSE 'RUNNING' END,
     %(inputs)s, %(queue)s, %(priority)s, %(app_version)s, %(parent_id)s, %(owner)s,
     CASE WHEN %(owner)s::text IS NULL THEN 0 ELSE 1 END,
     CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE now() + make_interval(secs => %(lease)s) END,
     CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE now() END, %(deadline)s
 WHERE %(parent_epoch)s::bigint IS NULL
    OR EXISTS (SELECT 1 FROM {schema}.workflows p
                WHERE p.workflow_id = %(parent_id)s AND p.epoch = %(parent_epoch)s AND p.status = 'RUNNING'
                  FOR KEY SHARE)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING epoch

-- name: workflow_enqueue
-- Insert a PENDING workflow unless the id exists, and wake idle workers in the same round trip
-- (the notification is delivered at commit, never before the row is visible; %(channel)s is NULL when
-- the backend must not notify inside a data statement: its wake-up hook sends it). A live duplicate of
-- (queue, dedup_id) fails on workflows_dedup_idx.
WITH ins AS (
    INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version, parent_id,
                                    dedup_id, run_at, partition_key, deadline_at)
    SELECT %(workflow_id)s, %(name)s, 'PENDING', %(inputs)s, %(queue)s, %(priority)s, %(app_version)s,
           %(parent_id)s, %(dedup_id)s,
           CASE WHEN %(delay)s > 0 THEN now() + make_interval(secs => %(delay)s) END, %(partition_key)s,
           %(deadline)s
     WHERE %(parent_epoch)s::bigint IS NULL
        OR EXISTS (SELECT 1 FROM {schema}.workflows p
                    WHERE p.workflow_id = %(parent_id)s AND p.epoch = %(parent_epoch)s AND p.status = 'RUNNING'
                      FOR KEY SHARE)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING epoch
)
SELECT ins.epoch,
       (SELECT pg_notify(%(channel)s, 'q:' || coalesce(%(queue)s, '')) WHERE %(channel)s::text IS NOT NULL)
  FROM ins

-- name: workflow_by_dedup
SELECT workflow_id FROM {schema}.workflows
 WHERE coalesce(queue, '') = coalesce(%(queue)s, '') AND dedup_id = %(dedup_id)s
   AND status IN ('PENDING', 'RUNNING')

-- name: workflow_get
SELECT workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch,
       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id
  FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s

-- name: workflow_get_many_terminal
SELECT workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch,
       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id
  FROM {schema}.workflows
 WHERE workflow_id = ANY(%(workflow_ids)s) AND status IN ('SUCCESS', 'ERROR', 'CANCELLED')

-- name: workflow_finish
-- Terminal status under the lease epoch: a fenced (old-epoch) owner updates nothing.
UPDATE {schema}.workflows
   SET status = %(status)s, output = %(output)s, error = %(error)s, error_type = %(error_type)s,
       finished_at = now(), owner = NULL, lease_expires_at = NULL
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'

-- name: workflow_release
-- Give a claim back; wakes idle workers at commit (channel NULL: the wake-up hook does).
UPDATE {schema}.workflows
   SET status = 'PENDING', owner = NULL, lease_expires_at = NULL
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
RETURNING queue,
          (SELECT pg_notify(%(channel)s, 'q:' || coalesce(queue, '')) WHERE %(channel)s::text IS NOT NULL)

-- name: workflow_claim
-- Claim ready work (PENDING) and orphaned work (RUNNING with an expired lease) of the default queue and
-- of queues without limits, in one statement. Queues the database knows as limited are never claimed
-- here (whatever this worker's own declaration says): they go through queue_claim.
-- SKIP LOCKED keeps claimers off each other's rows and off rows a checkpoint is being fenced against.
-- Every claim statement stamps the rows it takes with the call's claim token (and whether each was a
-- takeover): a retry after a lost acknowledgement reads them back with claim_read_back.
WITH ready_default AS (
    SELECT workflow_id FROM {schema}.workflows
     WHERE status = 'PENDING' AND queue IS NULL AND name = ANY(%(names)s)
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR '' = ANY(%(queues)s))
       AND (run_at IS NULL OR run_at <= now())
     ORDER BY priority, created_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), ready_named AS (
    SELECT workflow_id FROM {schema}.workflows w
     WHERE status = 'PENDING' AND queue IS NOT NULL AND name = ANY(%(names)s)
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR queue = ANY(%(queues)s))
       AND (run_at IS NULL OR run_at <= now())
       AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                          AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                               OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                               OR q.partitioned))
     ORDER BY priority, created_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT workflow_id FROM {schema}.workflows w
     WHERE status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
       -- never our own: a run of it may still be going here (our next heartbeat renews the lease); a
       -- second run beside it would break per-worker limits and waste work
       AND owner IS DISTINCT FROM %(owner)s
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s))
       AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                          AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                               OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                               OR q.partitioned))
     ORDER BY lease_expires_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT workflow_id, recovery FROM (
        SELECT workflow_id, true AS recovery, 0 AS o FROM expired
        UNION ALL
        SELECT workflow_id, false AS recovery, 1 AS o FROM ready_default
        UNION ALL
        SELECT workflow_id, false AS recovery, 1 AS o FROM ready_named
    ) u ORDER BY o LIMIT %(limit)s
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       started_at = coalesce(w.started_at, now()),
       claimed_at = CASE WHEN picked.recovery THEN w.claimed_at ELSE now() END,
       recoveries = w.recoveries + picked.recovery::int,
       claim_token = %(token)s, claim_recovery = picked.recovery
  FROM picked
 WHERE w.workflow_id = picked.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, picked.recovery, w.deadline_at

-- name: workflow_claim_candidates
-- Claims without multi-row locks (capabilities skip_locked / multi_row_locking_claims false): the same
-- candidates as workflow_claim, read without locking; each is then claimed by workflow_claim_row.
WITH ready_default AS (
    SELECT workflow_id, epoch, false AS recovery, 1 AS o, priority, created_at AS t FROM {schema}.workflows
     WHERE status = 'PENDING' AND queue IS NULL AND name = ANY(%(names)s)
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR '' = ANY(%(queues)s))
       AND (run_at IS NULL OR run_at <= now())
     ORDER BY priority, created_at
     LIMIT %(limit)s
), ready_named AS (
    SELECT workflow_id, epoch, false AS recovery, 1 AS o, priority, created_at AS t FROM {schema}.workflows w
     WHERE status = 'PENDING' AND queue IS NOT NULL AND name = ANY(%(names)s)
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR queue = ANY(%(queues)s))
       AND (run_at IS NULL OR run_at <= now())
       AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                          AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                               OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                               OR q.partitioned))
     ORDER BY priority, created_at
     LIMIT %(limit)s
), expired AS (
    SELECT workflow_id, epoch, true AS recovery, 0 AS o, 0 AS priority, lease_expires_at AS t
      FROM {schema}.workflows w
     WHERE status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
       AND owner IS DISTINCT FROM %(owner)s
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
       AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s))
       AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                          AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                               OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                               OR q.partitioned))
     ORDER BY lease_expires_at
     LIMIT %(limit)s
)
SELECT workflow_id, epoch, recovery FROM (
    SELECT * FROM expired UNION ALL SELECT * FROM ready_default UNION ALL SELECT * FROM ready_named
) u
 ORDER BY o, priority, t
 LIMIT %(limit)s

-- name: workflow_claim_row
-- Claim one candidate by key: a compare-and-set of its epoch (and of the state it was seen in), so of two
-- claimers of the same row exactly one updates it. A single-row statement (a router query on Citus).
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       started_at = coalesce(w.started_at, now()),
       claimed_at = CASE WHEN %(recovery)s THEN w.claimed_at ELSE now() END,
       recoveries = w.recoveries + %(recovery)s::int,
       claim_token = %(token)s, claim_recovery = %(recovery)s
 WHERE w.workflow_id = %(workflow_id)s AND w.epoch = %(epoch)s
   AND CASE WHEN %(recovery)s
            THEN w.status = 'RUNNING' AND w.lease_expires_at < now() AND w.owner IS DISTINCT FROM %(owner)s
            ELSE w.status = 'PENDING' AND (w.run_at IS NULL OR w.run_at <= now()) END
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, %(recovery)s, w.deadline_at

-- name: claim_read_back
-- A claim retried after a lost acknowledgement (workflow_claim, queue_claim): the rows this owner holds
-- under the call's token, i.e. what the lost attempt claimed, as a fresh claim returns them (a row taken
-- over or cancelled since has another owner or status). Served by workflows_owner_idx.
SELECT workflow_id, name, inputs, epoch, claim_recovery, deadline_at
  FROM {schema}.workflows
 WHERE owner = %(owner)s AND status = 'RUNNING' AND claim_token = %(token)s
 ORDER BY claim_recovery DESC, priority, created_at, workflow_id

-- name: lease_renew
-- Heartbeat: record the worker and extend every lease it still holds; returns what it holds. Rows are
-- locked in id order, like the grouped finish, so the two never deadlock.
WITH hb AS (
    INSERT INTO {schema}.workers (worker_id, hostname, pid)
    VALUES (%(owner)s, %(hostname)s, %(pid)s)
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
), mine AS (
    SELECT workflow_id FROM {schema}.workflows
     WHERE owner = %(owner)s AND status = 'RUNNING'
     ORDER BY workflow_id
       FOR NO KEY UPDATE
)
UPDATE {schema}.workflows w
   SET lease_expires_at = now() + make_interval(secs => %(lease)s)
  FROM mine
 WHERE w.workflow_id = mine.workflow_id AND w.owner = %(owner)s AND w.status = 'RUNNING'
RETURNING w.workflow_id, w.epoch

-- name: lease_renew_no_worker
WITH mine AS (
    SELECT workflow_id FROM {schema}.workflows
     WHERE owner = %(owner)s AND status = 'RUNNING'
     ORDER BY workflow_id
       FOR NO KEY UPDATE
)
UPDATE {schema}.workflows w
   SET lease_expires_at = now() + make_interval(secs => %(lease)s)
  FROM mine
 WHERE w.workflow_id = mine.workflow_id AND w.owner = %(owner)s AND w.status = 'RUNNING'
RETURNING w.workflow_id, w.epoch

-- name: step_record
-- One round trip per checkpoint: insert only while our epoch owns the workflow. FOR KEY SHARE holds
-- the workflow row against a concurrent claim (FOR UPDATE) until this checkpoint commits.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at)
SELECT %(workflow_id)s, %(step_id)s, %(name)s, %(output)s, %(error)s, %(epoch)s, %(attempts)s, %(started_at)s
 WHERE EXISTS (SELECT 1 FROM {schema}.workflows
                WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
                  FOR KEY SHARE)
ON CONFLICT (workflow_id, step_id) DO NOTHING
RETURNING finished_at

-- name: step_get
SELECT workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at
  FROM {schema}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s

-- name: step_list
SELECT workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at
  FROM {schema}.steps WHERE workflow_id = %(workflow_id)s ORDER BY step_id

-- name: workflow_epoch
SELECT epoch, status FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s

-- name: worker_list
SELECT worker_id, hostname, pid, started_at, heartbeat_at
  FROM {schema}.workers ORDER BY heartbeat_at DESC LIMIT 1000

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: notify_many
SELECT pg_notify(%(channel)s, p) FROM unnest(%(payloads)s::text[]) p

-- name: step_record_many
-- Group commit: checkpoints of many workflows in one statement, each fenced by its own epoch.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at)
SELECT b.workflow_id, b.step_id, b.name, b.output, b.error, b.epoch, b.attempts, b.started_at
  FROM unnest(%(workflow_ids)s::text[], %(step_ids)s::int[], %(names)s::text[], %(outputs)s::text[],
              %(errors)s::text[], %(epochs)s::bigint[], %(attempts)s::int[], %(started)s::timestamptz[])
       AS b(workflow_id, step_id, name, output, error, epoch, attempts, started_at)
  JOIN {schema}.workflows w
    ON w.workflow_id = b.workflow_id AND w.epoch = b.epoch AND w.status = 'RUNNING'
 ORDER BY b.workflow_id
   FOR KEY SHARE OF w
ON CONFLICT (workflow_id, step_id) DO NOTHING
RETURNING workflow_id, step_id, finished_at

-- name: workflow_finish_many
-- Group commit of terminal statuses, each under its own epoch; rows are locked in id order (as the
-- heartbeat does) so concurrent multi-row updates never deadlock.
WITH b AS (
    SELECT * FROM unnest(%(workflow_ids)s::text[], %(epochs)s::bigint[], %(statuses)s::text[],
                         %(outputs)s::text[], %(errors)s::text[], %(error_types)s::text[])
             AS b(workflow_id, epoch, status, output, error, error_type)
), locked AS (
    SELECT w.workflow_id FROM {schema}.workflows w JOIN b ON b.workflow_id = w.workflow_id
     WHERE w.epoch = b.epoch AND w.status = 'RUNNING'
     ORDER BY w.workflow_id
       FOR NO KEY UPDATE OF w
)
UPDATE {schema}.workflows w
   SET status = b.status, output = b.output, error = b.error, error_type = b.error_type,
       finished_at = now(), owner = NULL, lease_expires_at = NULL
  FROM b, locked
 WHERE w.workflow_id = b.workflow_id AND locked.workflow_id = w.workflow_id
   AND w.epoch = b.epoch AND w.status = 'RUNNING'
RETURNING w.workflow_id

-- name: workflow_children
-- Workflows started by a parent (served by workflows_parent_idx).
SELECT workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch,
       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id
  FROM {schema}.workflows WHERE parent_id = %(workflow_id)s
 ORDER BY created_at, workflow_id
 LIMIT %(limit)s

-- Monitor queries (`kit monitor`): each one bounded (LIMIT, a time window, or the active set) and
-- index-served; tests/test_observability.py checks their plans on 100k workflows. Filters: %(name)s and
-- %(queue)s are NULL for "any"; queue 'default' also matches workflows without a queue.

-- name: monitor_node
SELECT now(), pg_is_in_recovery(), host(inet_server_addr()), inet_server_port()

-- name: monitor_workers
SELECT k.worker_id, k.hostname, k.pid, k.started_at, k.heartbeat_at,
       k.heartbeat_at > now() - make_interval(secs => %(alive)s) AS alive,
       (SELECT count(*) FROM {schema}.workflows w
         WHERE w.owner = k.worker_id AND w.status = 'RUNNING') AS claims
  FROM {schema}.workers k
 ORDER BY k.heartbeat_at DESC
 LIMIT %(limit)s

-- name: monitor_queues
-- Depth and in-flight per queue (workflows_active_queue_idx), with the declared limits.
SELECT a.queue, a.depth, a.in_flight, q.concurrency,
       CASE WHEN q.rate_count IS NOT NULL AND q.rate_period > 0 THEN q.rate_count / q.rate_period END
  FROM (SELECT coalesce(queue, 'default') AS queue,
               count(*) FILTER (WHERE status = 'PENDING') AS depth,
               count(*) FILTER (WHERE status = 'RUNNING') AS in_flight
          FROM {schema}.workflows
         WHERE status IN ('PENDING', 'RUNNING')
           AND (%(name)s::text IS NULL OR name = %(name)s)
           AND (%(queue)s::text IS NULL OR queue = %(queue)s OR (%(queue)s = 'default' AND queue IS NULL))
         GROUP BY 1
         ORDER BY 1
         LIMIT 100) a
  LEFT JOIN {schema}.queues q ON q.name = a.queue
 ORDER BY 1

-- name: monitor_finished
-- Finished workflows per time bucket and status over the window (workflows_finished_idx).
SELECT to_timestamp(floor(extract(epoch FROM finished_at) / %(bucket)s) * %(bucket)s) AS bucket,
       status, count(*)
  FROM {schema}.workflows
 WHERE finished_at >= now() - make_interval(secs => %(window)s)
   AND (%(name)s::text IS NULL OR name = %(name)s)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s OR (%(queue)s = 'default' AND queue IS NULL))
 GROUP BY 1, 2

-- name: monitor_latency
-- p50/p95/p99 (seconds) of the newest finished workflows in the window, and of their steps
-- (steps reached through the primary key, so no steps index is needed).
WITH recent AS (
    SELECT workflow_id, started_at, finished_at
      FROM {schema}.workflows
     WHERE finished_at >= now() - make_interval(secs => %(window)s)
       AND started_at IS NOT NULL
       AND (%(name)s::text IS NULL OR name = %(name)s)
       AND (%(queue)s::text IS NULL OR queue = %(queue)s OR (%(queue)s = 'default' AND queue IS NULL))
     ORDER BY finished_at DESC
     LIMIT %(rows)s
), wf AS (
    SELECT count(*) AS n,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[])
               WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)::float8) AS p
      FROM recent
), st AS (
    SELECT count(*) AS n,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[])
               WITHIN GROUP (ORDER BY extract(epoch FROM s.finished_at - s.started_at)::float8) AS p
      FROM recent r JOIN {schema}.steps s ON s.workflow_id = r.workflow_id
     WHERE s.started_at IS NOT NULL
)
SELECT wf.n, wf.p, st.n, st.p FROM wf, st

-- name: monitor_failures
-- The newest failures of the last 24 hours (workflows_error_finished_idx, read backwards).
SELECT workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch,
       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id
  FROM {schema}.workflows
 WHERE status = 'ERROR' AND finished_at >= now() - interval '24 hours'
   AND (%(name)s::text IS NULL OR name = %(name)s)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s OR (%(queue)s = 'default' AND queue IS NULL))
 ORDER BY finished_at DESC
 LIMIT %(limit)s

-- name: monitor_oldest_pending
-- The longest-waiting PENDING workflow (workflows_status_created_idx).
SELECT workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch,
       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id
  FROM {schema}.workflows
 WHERE status = 'PENDING'
   AND (%(name)s::text IS NULL OR name = %(name)s)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s OR (%(queue)s = 'default' AND queue IS NULL))
 ORDER BY created_at
 LIMIT 1

-- name: message_send
-- Deliver a message to an existing workflow (idempotent by sender key) and wake its waiters at commit.
-- A send from workflow code is fenced like a checkpoint: only while the sender's epoch owns it (so a
-- cancelled or taken-over sender delivers nothing); the last column says whether the fence held.
WITH sender AS (
    SELECT %(sender_id)s::text IS NULL
           OR EXISTS (SELECT 1 FROM {schema}.workflows
                       WHERE workflow_id = %(sender_id)s AND epoch = %(sender_epoch)s AND status = 'RUNNING'
                         FOR KEY SHARE) AS ok
), ins AS (
    INSERT INTO {schema}.messages (workflow_id, topic, body, sender_key)
    SELECT %(workflow_id)s, %(topic)s, %(body)s, %(sender_key)s
     WHERE EXISTS (SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s)
       AND (SELECT ok FROM sender)
    ON CONFLICT (workflow_id, sender_key) WHERE sender_key IS NOT NULL DO NOTHING
    RETURNING message_id
)
SELECT EXISTS (SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s),
       (SELECT count(*) FROM ins),
       (SELECT pg_notify(%(channel)s, 'm:' || %(workflow_id)s) WHERE %(channel)s::text IS NOT NULL),
       (SELECT ok FROM sender)

-- name: workflow_fence
-- Inside a transaction: hold the workflow row against a concurrent claim while our epoch owns it.
SELECT 1 FROM {schema}.workflows
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
   FOR KEY SHARE

-- name: message_take
-- Inside the receive transaction: consume the oldest unconsumed message of a topic.
UPDATE {schema}.messages m
   SET consumed_at = now(), consumed_step = %(step_id)s
  FROM (SELECT workflow_id, message_id FROM {schema}.messages
         WHERE workflow_id = %(workflow_id)s AND topic = %(topic)s AND consumed_at IS NULL
         ORDER BY message_id LIMIT 1
           FOR UPDATE SKIP LOCKED) pick
 WHERE m.workflow_id = pick.workflow_id AND m.message_id = pick.message_id
RETURNING m.body

-- name: step_insert
-- Inside a fenced transaction: record the checkpoint.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at)
VALUES (%(workflow_id)s, %(step_id)s, %(name)s, %(output)s, %(error)s, %(epoch)s, %(attempts)s, %(started_at)s)
RETURNING finished_at

-- name: event_upsert
INSERT INTO {schema}.events (workflow_id, key, value, step_id)
VALUES (%(workflow_id)s, %(key)s, %(value)s, %(step_id)s)
ON CONFLICT (workflow_id, key) DO UPDATE
   SET value = excluded.value, step_id = excluded.step_id, updated_at = now()

-- name: event_get
SELECT value FROM {schema}.events WHERE workflow_id = %(workflow_id)s AND key = %(key)s

-- name: queue_define
INSERT INTO {schema}.queues (name, concurrency, worker_concurrency, partition_concurrency, rate_count,
                             rate_period, priority, partitioned)
VALUES (%(name)s, %(concurrency)s, %(worker_concurrency)s, %(partition_concurrency)s, %(rate_count)s,
        %(rate_period)s, %(priority)s, %(partitioned)s)
ON CONFLICT (name) DO UPDATE
   SET concurrency = excluded.concurrency, worker_concurrency = excluded.worker_concurrency,
       partition_concurrency = excluded.partition_concurrency, rate_count = excluded.rate_count,
       rate_period = excluded.rate_period, priority = excluded.priority, partitioned = excluded.partitioned,
       updated_at = now()
 WHERE (queues.concurrency, queues.worker_concurrency, queues.partition_concurrency, queues.rate_count,
        queues.rate_period, queues.priority, queues.partitioned)
       IS DISTINCT FROM
       (excluded.concurrency, excluded.worker_concurrency, excluded.partition_concurrency, excluded.rate_count,
        excluded.rate_period, excluded.priority, excluded.partitioned)

-- name: queue_get
SELECT name, concurrency, worker_concurrency, partition_concurrency, rate_count, rate_period, priority, partitioned
  FROM {schema}.queues WHERE name = %(name)s

-- name: queue_lock
-- First statement of a limited claim's transaction: one claimer per queue at a time; others skip the
-- queue this round instead of queueing up behind the head of it (low lock contention).
SELECT concurrency, worker_concurrency, partition_concurrency, rate_count, rate_period, partitioned,
       last_partition
  FROM {schema}.queues WHERE name = %(queue)s
   FOR UPDATE SKIP LOCKED

-- name: queue_room
-- Second statement, in a fresh snapshot taken after the queue lock (so every earlier claim is counted):
-- how many new starts the limits allow now, and how many expired leases this worker may take over
-- (a takeover does not add to the queue's running count, only to this worker's).
WITH mine AS (
    SELECT count(*) AS n FROM {schema}.workflows
     WHERE queue = %(queue)s AND status = 'RUNNING' AND owner = %(owner)s
), worker_room AS (
    -- runs still going in this process count too: one whose lease was taken over during an outage keeps
    -- executing its step until its next checkpoint is refused
    SELECT coalesce(%(worker_concurrency)s - greatest((SELECT n FROM mine), %(running_here)s), %(limit)s) AS n
)
SELECT greatest(0, least(
           %(limit)s,
           (SELECT n FROM worker_room),
           coalesce(%(concurrency)s - (SELECT count(*) FROM {schema}.workflows
                                         WHERE queue = %(queue)s AND status = 'RUNNING'), %(limit)s),
           coalesce(%(rate_count)s - (SELECT count(*) FROM {schema}.workflows
                                        WHERE queue = %(queue)s AND claimed_at IS NOT NULL
                                          AND claimed_at > now() - make_interval(secs => %(rate_period)s)),
                    %(limit)s))),
       greatest(0, least(%(limit)s, (SELECT n FROM worker_room)))

-- name: queue_reclaim
-- Take over expired leases of a limited queue (recovery), within this worker's room.
WITH picked AS (
    SELECT workflow_id FROM {schema}.workflows
     WHERE queue = %(queue)s AND status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
       AND owner IS DISTINCT FROM %(owner)s  -- never our own (see workflow_claim)
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
     ORDER BY lease_expires_at
     LIMIT %(n)s
       FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflows w
   SET owner = %(owner)s, epoch = w.epoch + 1, lease_expires_at = now() + make_interval(secs => %(lease)s),
       recoveries = w.recoveries + 1, claim_token = %(token)s, claim_recovery = true
  FROM picked
 WHERE w.workflow_id = picked.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, true, w.deadline_at

-- name: queue_claim
-- Start up to %(n)s of the oldest ready workflows (unpartitioned queues), n computed by queue_room.
WITH picked AS (
    SELECT workflow_id FROM {schema}.workflows
     WHERE status = 'PENDING' AND queue = %(queue)s AND name = ANY(%(names)s)
       AND (run_at IS NULL OR run_at <= now())
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
     ORDER BY priority, created_at
     LIMIT %(n)s
       FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s), started_at = coalesce(w.started_at, now()),
       claimed_at = now(), claim_token = %(token)s, claim_recovery = false
  FROM picked
 WHERE w.workflow_id = picked.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, false, w.deadline_at

-- name: queue_claim_partitioned
-- Partitioned queues: walk the tenants with ready work (a loose index scan) starting after the tenant
-- where the last claim stopped and wrapping around once, take the head of each tenant's backlog (up to
-- its per-partition room), then interleave tenants: every tenant's first item before anyone's second.
-- The walk only visits tenants with work this worker can run (its workflow names and app versions), so
-- tenants holding only other versions' work never hide the rest.
WITH RECURSIVE keys(k, depth, wrapped) AS (
    (SELECT k, 1, wrapped FROM (
        (SELECT partition_key AS k, false AS wrapped FROM {schema}.workflows
          WHERE status = 'PENDING' AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key > coalesce(%(cursor)s, '') AND (run_at IS NULL OR run_at <= now()) AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
          ORDER BY partition_key LIMIT 1)
        UNION ALL
        (SELECT partition_key, true FROM {schema}.workflows
          WHERE status = 'PENDING' AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key <= coalesce(%(cursor)s, '') AND (run_at IS NULL OR run_at <= now()) AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
          ORDER BY partition_key LIMIT 1)
     ) first_key ORDER BY wrapped LIMIT 1)
    UNION ALL
    SELECT nxt.k, keys.depth + 1, nxt.wrapped
      FROM keys CROSS JOIN LATERAL (
            SELECT coalesce(
                       (SELECT w.partition_key FROM {schema}.workflows w
                         WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                           AND w.partition_key > keys.k AND (w.run_at IS NULL OR w.run_at <= now()) AND w.name = ANY(%(names)s)
                           AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                                OR w.app_version = ANY(%(versions)s))
                           AND (NOT keys.wrapped OR w.partition_key <= coalesce(%(cursor)s, ''))
                         ORDER BY w.partition_key LIMIT 1),
                       CASE WHEN NOT keys.wrapped THEN
                           (SELECT w.partition_key FROM {schema}.workflows w
                             WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                               AND w.partition_key <= coalesce(%(cursor)s, '')
                               AND (w.run_at IS NULL OR w.run_at <= now()) AND w.name = ANY(%(names)s)
                           AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                                OR w.app_version = ANY(%(versions)s))
                             ORDER BY w.partition_key LIMIT 1) END) AS k,
                   keys.wrapped OR NOT EXISTS (
                       SELECT 1 FROM {schema}.workflows w
                        WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                          AND w.partition_key > keys.k AND (w.run_at IS NULL OR w.run_at <= now()) AND w.name = ANY(%(names)s)
                           AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                                OR w.app_version = ANY(%(versions)s))) AS wrapped
           ) nxt
     WHERE keys.k IS NOT NULL AND keys.depth < %(max_partitions)s
       AND NOT (keys.wrapped AND nxt.k IS NULL)
), walk AS (
    SELECT DISTINCT k FROM keys WHERE k IS NOT NULL
), heads AS (
    SELECT h.workflow_id, h.partition_key, h.priority, h.created_at,
           row_number() OVER (PARTITION BY h.partition_key ORDER BY h.priority, h.created_at) AS turn
      FROM walk CROSS JOIN LATERAL (
            SELECT w.workflow_id, w.partition_key, w.priority, w.created_at FROM {schema}.workflows w
             WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key = walk.k
               AND w.name = ANY(%(names)s) AND (w.run_at IS NULL OR w.run_at <= now())
               AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL OR w.app_version = ANY(%(versions)s))
             ORDER BY w.priority, w.created_at
             LIMIT greatest(0, least(
                    %(n)s,
                    coalesce(%(partition_concurrency)s - (SELECT count(*) FROM {schema}.workflows r
                                                           WHERE r.queue = %(queue)s AND r.partition_key = walk.k
                                                             AND r.status = 'RUNNING'),
                             %(n)s)))
           ) h
), chosen AS (
    SELECT workflow_id FROM heads ORDER BY turn, priority, created_at LIMIT %(n)s
), picked AS (
    SELECT w.workflow_id, w.partition_key FROM {schema}.workflows w JOIN chosen USING (workflow_id)
     WHERE w.status = 'PENDING'
       FOR UPDATE OF w SKIP LOCKED
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s), started_at = coalesce(w.started_at, now()),
       claimed_at = now(), claim_token = %(token)s, claim_recovery = false
  FROM picked
 WHERE w.workflow_id = picked.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, false, w.deadline_at, w.partition_key

-- name: queue_cursor
UPDATE {schema}.queues SET last_partition = %(cursor)s WHERE name = %(queue)s

-- name: queue_limited_names
SELECT name FROM {schema}.queues
 WHERE concurrency IS NOT NULL OR worker_concurrency IS NOT NULL OR partition_concurrency IS NOT NULL
    OR rate_count IS NOT NULL OR partitioned

-- name: queue_list
-- Declared queues and queues with active work: depth, in-flight and limits.
SELECT coalesce(a.queue, q.name, '') AS queue, coalesce(a.depth, 0), coalesce(a.in_flight, 0),
       q.concurrency, q.worker_concurrency, q.partition_concurrency, q.rate_count, q.rate_period,
       coalesce(q.partitioned, false)
  FROM (SELECT coalesce(queue, '') AS queue,
               count(*) FILTER (WHERE status = 'PENDING') AS depth,
               count(*) FILTER (WHERE status = 'RUNNING') AS in_flight
          FROM {schema}.workflows WHERE status IN ('PENDING', 'RUNNING')
         GROUP BY 1) a
  FULL JOIN {schema}.queues q ON q.name = a.queue
 ORDER BY 1
 LIMIT 1000

-- name: stream_append
-- Inside a fenced transaction: append an element (or the close row) at the next position of a stream,
-- unless the stream is closed (then no row: the caller tells a write to a closed stream from a re-close).
INSERT INTO {schema}.streams (workflow_id, key, seq, value, closed, step_id)
SELECT %(workflow_id)s, %(key)s, coalesce(max(seq) + 1, 0), %(value)s, %(closed)s, %(step_id)s
  FROM {schema}.streams
 WHERE workflow_id = %(workflow_id)s AND key = %(key)s
HAVING NOT coalesce(bool_or(closed), false)
RETURNING seq

-- name: stream_closed_at
-- The position of a stream's close row (NULL/no row when open).
SELECT seq FROM {schema}.streams WHERE workflow_id = %(workflow_id)s AND key = %(key)s AND closed

-- name: stream_read
-- One snapshot: the workflow's status and up to limit + 1 rows of the stream after a position (the
-- extra row tells "closed right after the last element" from "more elements follow"). Always one row
-- at least (status NULL: no such workflow; seq NULL: no rows after the position).
SELECT w.status, s.seq, s.value, s.closed
  FROM (SELECT %(workflow_id)s::text AS workflow_id) q
  LEFT JOIN {schema}.workflows w ON w.workflow_id = q.workflow_id
  LEFT JOIN LATERAL (
        SELECT seq, value, closed FROM {schema}.streams
         WHERE workflow_id = q.workflow_id AND key = %(key)s AND seq > %(after_seq)s
         ORDER BY seq
         LIMIT %(limit)s + 1) s ON true
 ORDER BY s.seq

-- name: message_list
-- Observability: a workflow's messages, oldest first (consumed and still waiting).
SELECT message_id, topic, body, sender_key, created_at, consumed_at, consumed_step
  FROM {schema}.messages WHERE workflow_id = %(workflow_id)s
 ORDER BY message_id
 LIMIT %(limit)s

-- name: event_list
-- Observability: a workflow's events with their latest values.
SELECT key, value, step_id, updated_at
  FROM {schema}.events WHERE workflow_id = %(workflow_id)s
 ORDER BY key
 LIMIT %(limit)s

-- name: stream_list
-- Observability: a workflow's streams: element count, closed, last write (primary-key range scan).
SELECT key, count(*) FILTER (WHERE NOT closed), bool_or(closed), max(created_at)
  FROM {schema}.streams WHERE workflow_id = %(workflow_id)s
 GROUP BY key
 ORDER BY key
 LIMIT %(limit)s

-- name: message_waiting
-- Cheap, lock-free check before a receive transaction: is there a message to take, or is the step
-- already recorded (then the transaction returns it)?
SELECT EXISTS (SELECT 1 FROM {schema}.messages
                WHERE workflow_id = %(workflow_id)s AND topic = %(topic)s AND consumed_at IS NULL)
    OR EXISTS (SELECT 1 FROM {schema}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s)

-- Lifecycle: cancel, resume, fork, retention (kit/lifecycle.py; docs/lifecycle.md).

-- name: call_outcome_record
-- Last statement of a control operation's transaction (cancel, resume, fork, gc, schedule_define, migrate):
-- its answer under the call's token, committed with its writes; rows older than %(keep)s seconds (far
-- beyond any call's retries) are deleted on the way.
WITH pruned AS (
    DELETE FROM {schema}.call_outcomes WHERE created_at < now() - make_interval(secs => %(keep)s)
)
INSERT INTO {schema}.call_outcomes (token, operation, result) VALUES (%(token)s, %(operation)s, %(result)s)

-- name: call_outcome_get
-- First statement of a retried control operation: the answer its earlier attempt committed, if it did.
SELECT result FROM {schema}.call_outcomes WHERE token = %(token)s

-- name: workflow_cancel
-- Cancel a workflow and its unfinished descendants. FOR UPDATE waits for checkpoints in flight (they hold
-- FOR KEY SHARE); the epoch bump fences the owner off, so no step commits after the cancel does.
WITH RECURSIVE tree(workflow_id) AS (
    SELECT workflow_id FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s
    UNION
    SELECT c.workflow_id FROM {schema}.workflows c JOIN tree ON c.parent_id = tree.workflow_id
), doomed AS (
    SELECT w.workflow_id FROM {schema}.workflows w JOIN tree USING (workflow_id)
     WHERE w.status IN ('PENDING', 'RUNNING')
     ORDER BY w.workflow_id
       FOR UPDATE OF w
)
UPDATE {schema}.workflows w
   SET status = 'CANCELLED', error_type = 'WorkflowCancelledError', finished_at = now(),
       -- descendants remember which cancel ended them: resuming that workflow resumes exactly those
       error = CASE WHEN w.workflow_id = %(workflow_id)s::text THEN %(error)s::text
                    ELSE jsonb_set(%(error)s::text::jsonb, '{{cancelled_with}}', to_jsonb(%(workflow_id)s::text))::text
               END,
       owner = NULL, lease_expires_at = NULL, epoch = w.epoch + 1
  FROM doomed
 WHERE w.workflow_id = doomed.workflow_id AND w.status IN ('PENDING', 'RUNNING')
RETURNING w.workflow_id

-- name: workflow_lock_status
SELECT status FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s FOR UPDATE

-- name: workflow_resume_tree
-- The workflow and the descendants its own cancel cancelled (not ones cancelled on their own: by their
-- deadline, or by a cancel of theirs).
WITH RECURSIVE tree(workflow_id) AS (
    SELECT workflow_id FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s
    UNION
    SELECT c.workflow_id FROM {schema}.workflows c JOIN tree ON c.parent_id = tree.workflow_id
     WHERE c.status = 'CANCELLED' AND left(c.error, 1) = chr(123)
       AND c.error::jsonb ->> 'cancelled_with' = %(workflow_id)s
)
SELECT w.workflow_id FROM {schema}.workflows w JOIN tree USING (workflow_id)
 ORDER BY w.workflow_id
   FOR UPDATE OF w

-- name: steps_drop_final_error
-- A resumed workflow retries the step whose error ended it: drop that last checkpoint if it is an error.
DELETE FROM {schema}.steps s
 WHERE s.workflow_id = ANY(%(workflow_ids)s) AND s.error IS NOT NULL
   AND s.step_id = (SELECT max(x.step_id) FROM {schema}.steps x WHERE x.workflow_id = s.workflow_id)

-- name: workflow_resume
UPDATE {schema}.workflows
   SET status = 'PENDING', output = NULL, error = NULL, error_type = NULL, finished_at = NULL, owner = NULL,
       lease_expires_at = NULL, epoch = epoch + 1, run_at = NULL, deadline_at = %(deadline)s
 WHERE workflow_id = ANY(%(workflow_ids)s) AND status IN ('CANCELLED', 'ERROR')
RETURNING workflow_id, queue,
          (SELECT pg_notify(%(channel)s, 'q:' || coalesce(queue, '')) WHERE %(channel)s::text IS NOT NULL)

-- name: workflow_fork_source
SELECT w.name, w.inputs, w.queue, w.priority,
       (SELECT max(s.step_id) FROM {schema}.steps s WHERE s.workflow_id = w.workflow_id)
  FROM {schema}.workflows w WHERE w.workflow_id = %(source_id)s

-- name: workflow_fork_insert
WITH ins AS (
    -- epoch 1: its first claim (epoch 2) loads the copied checkpoints, as for any workflow that ran before.
    INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version,
                                    forked_from, deadline_at, epoch, partition_key)
    SELECT %(new_id)s, w.name, 'PENDING', w.inputs, w.queue, w.priority, %(app_version)s, w.workflow_id,
           %(deadline)s, 1, w.partition_key
      FROM {schema}.workflows w WHERE w.workflow_id = %(source_id)s
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING epoch, queue
)
SELECT ins.epoch, ins.queue,
       (SELECT pg_notify(%(channel)s, 'q:' || coalesce(ins.queue, '')) WHERE %(channel)s::text IS NOT NULL)
  FROM ins

-- name: workflow_fork_steps
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at)
SELECT %(new_id)s, step_id, name, output, error, 0, attempts, started_at, finished_at
  FROM {schema}.steps WHERE workflow_id = %(source_id)s AND step_id < %(from_step)s

-- name: workflow_fork_events
-- Each event's latest value as of the copied steps, rebuilt from their set_event checkpoints (the events
-- table keeps only the latest value, which a later step may have overwritten).
INSERT INTO {schema}.events (workflow_id, key, value, step_id, updated_at)
-- (a set_event in a task of an async workflow is recorded as "set_event:<key>@t:<task>")
SELECT DISTINCT ON (k) %(new_id)s, k, output, step_id, finished_at
  FROM (SELECT regexp_replace(substr(name, 11), '@t:[0-9.]+$', '') AS k, output, step_id, finished_at
          FROM {schema}.steps
         WHERE workflow_id = %(source_id)s AND step_id < %(from_step)s AND name LIKE 'set\_event:%%') e
 ORDER BY k, step_id DESC

-- name: workflow_fork_streams
INSERT INTO {schema}.streams (workflow_id, key, seq, value, closed, step_id, created_at)
SELECT %(new_id)s, key, seq, value, closed, step_id, created_at
  FROM {schema}.streams WHERE workflow_id = %(source_id)s AND step_id < %(from_step)s

-- name: workflow_gc
-- One batch of retention: finished long enough ago (workflows_finished_idx), never in flight, and never a
-- workflow that a remaining workflow's steps refer to (its parent, or a fork of its parent, may still
-- resume and re-attach to it: steps_child_ref_idx). Deleting a parent makes its children deletable in
-- the next batch. Rows a resume holds are skipped (SKIP LOCKED) and the conditions re-checked after locking.
WITH doomed AS (
    SELECT w.workflow_id FROM {schema}.workflows w
     WHERE w.finished_at IS NOT NULL AND w.finished_at < now() - make_interval(secs => %(age)s)
       AND w.status IN ('SUCCESS', 'ERROR', 'CANCELLED')
       AND NOT EXISTS (SELECT 1 FROM {schema}.steps r
                        WHERE (r.name LIKE 'start:%%' OR r.name LIKE 'enqueue:%%')
                          AND r.output = to_json(w.workflow_id)::text AND r.workflow_id <> w.workflow_id)
     ORDER BY w.finished_at
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), del_steps AS (
    DELETE FROM {schema}.steps x USING doomed d WHERE x.workflow_id = d.workflow_id
), del_messages AS (
    DELETE FROM {schema}.messages x USING doomed d WHERE x.workflow_id = d.workflow_id
), del_events AS (
    DELETE FROM {schema}.events x USING doomed d WHERE x.workflow_id = d.workflow_id
), del_streams AS (
    DELETE FROM {schema}.streams x USING doomed d WHERE x.workflow_id = d.workflow_id
)
DELETE FROM {schema}.workflows w USING doomed d WHERE w.workflow_id = d.workflow_id
RETURNING w.workflow_id

-- name: workflow_gc_count
-- What the next retention batch would delete (children of those are counted once their parents are gone).
SELECT count(*) FROM (
    SELECT 1 FROM {schema}.workflows w
     WHERE w.finished_at IS NOT NULL AND w.finished_at < now() - make_interval(secs => %(age)s)
       AND w.status IN ('SUCCESS', 'ERROR', 'CANCELLED')
       AND NOT EXISTS (SELECT 1 FROM {schema}.steps r
                        WHERE (r.name LIKE 'start:%%' OR r.name LIKE 'enqueue:%%')
                          AND r.output = to_json(w.workflow_id)::text AND r.workflow_id <> w.workflow_id)
     LIMIT %(batch)s) c

-- name: workers_gc
DELETE FROM {schema}.workers WHERE heartbeat_at < now() - make_interval(secs => %(age)s)

-- name: workflow_version_counts
SELECT app_version, count(*) FROM {schema}.workflows WHERE status IN ('PENDING', 'RUNNING') GROUP BY 1

-- name: schedule_get
-- A schedule's definition and cursor (FOR UPDATE variant: schedule_get_locked).
SELECT name, workflow_name, cron, timezone, queue, catch_up, max_catch_up, cursor_at, last_tick,
       last_workflow_id, updated_at
  FROM {schema}.schedules WHERE name = %(name)s

-- name: schedule_get_locked
SELECT name, workflow_name, cron, timezone, queue, catch_up, max_catch_up, cursor_at, last_tick,
       last_workflow_id, updated_at
  FROM {schema}.schedules WHERE name = %(name)s FOR UPDATE

-- name: schedule_list
SELECT name, workflow_name, cron, timezone, queue, catch_up, max_catch_up, cursor_at, last_tick,
       last_workflow_id, updated_at
  FROM {schema}.schedules ORDER BY name

-- name: schedule_define
-- Store a schedule's definition. A new schedule, or one whose cron or time zone changed, starts its cursor
-- at the application's "now": ticks of the new definition before it was declared are not missed ticks.
INSERT INTO {schema}.schedules (name, workflow_name, cron, timezone, queue, catch_up, max_catch_up, cursor_at)
VALUES (%(name)s, %(workflow_name)s, %(cron)s, %(timezone)s, %(queue)s, %(catch_up)s, %(max_catch_up)s, %(now)s)
ON CONFLICT (name) DO UPDATE
   SET workflow_name = EXCLUDED.workflow_name, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
       queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up, max_catch_up = EXCLUDED.max_catch_up,
       cursor_at = CASE WHEN (schedules.cron, schedules.timezone) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.timezone)
                        THEN greatest(schedules.cursor_at, EXCLUDED.cursor_at) ELSE schedules.cursor_at END,
       updated_at = now()
 WHERE (schedules.workflow_name, schedules.cron, schedules.timezone, schedules.queue, schedules.catch_up,
        schedules.max_catch_up)
       IS DISTINCT FROM (EXCLUDED.workflow_name, EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.queue,
                         EXCLUDED.catch_up, EXCLUDED.max_catch_up)

-- name: schedule_advance
-- Compare-and-set of the cursor: a worker that lost the race (the cursor moved) updates nothing. Under
-- READ COMMITTED a concurrent advance waits for the row lock, then re-checks the condition on the new row.
UPDATE {schema}.schedules
   SET cursor_at = %(new_cursor)s,
       last_tick = coalesce(%(last_tick)s, last_tick),
       last_workflow_id = coalesce(%(last_workflow_id)s, last_workflow_id),
       updated_at = now()
 WHERE name = %(name)s AND cursor_at = %(expected)s AND %(new_cursor)s > cursor_at
RETURNING name

-- name: schedule_tx_guard
-- First statement of a schedule transaction: a holder of the row lock that freezes is disconnected.
SELECT set_config('idle_in_transaction_session_timeout', %(idle_ms)s, true)
