-- Statements of the CockroachDB backend that differ from the PostgreSQL backend's (backends/postgres/queries.sql);
-- every other statement is shared. These run unchanged on a CockroachDB cluster and on the serializable
-- PostgreSQL profile, so they are written in the SQL both servers accept:
--   * no pg_notify (no LISTEN/NOTIFY on CockroachDB: waiters poll), no advisory locks;
--   * no FOR KEY SHARE / FOR NO KEY UPDATE and no SKIP LOCKED under SERIALIZABLE: a fenced write reads the
--     workflow row under its epoch, and a concurrent claim (which writes that row) conflicts with it, so one of
--     the two transactions fails with 40001 and runs again (the epoch then decides);
--   * no make_interval(secs => ...) (named arguments): seconds * interval '1 second';
--   * explicit casts wherever a parameter's type is not obvious from its context (NULLs, arithmetic), and
--     extract(epoch ...) cast to float8 (CockroachDB returns float, PostgreSQL numeric).
-- Notifications columns that the PostgreSQL statements return are kept as NULL so the shared code reads the
-- same row shapes.

-- name: workflow_create
INSERT INTO {schema}.workflows
    (workflow_id, name, status, inputs, queue, priority, app_version, parent_id, owner, epoch,
     lease_expires_at, started_at, deadline_at)
SELECT
     %(workflow_id)s, %(name)s, CASE WHEN %(owner)s::text IS NULL THEN 'PENDING' ELSE 'RUNNING' END,
     %(inputs)s, %(queue)s, %(priority)s::int8, %(app_version)s, %(parent_id)s, %(owner)s::text,
     CASE WHEN %(owner)s::text IS NULL THEN 0 ELSE 1 END,
     CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE now() + %(lease)s::float8 * interval '1 second' END,
     CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE now() END, %(deadline)s::timestamptz
 WHERE %(parent_epoch)s::int8 IS NULL
    OR EXISTS (SELECT 1 FROM {schema}.workflows p
                WHERE p.workflow_id = %(parent_id)s AND p.epoch = %(parent_epoch)s::int8 AND p.status = 'RUNNING')
ON CONFLICT (workflow_id) DO NOTHING
RETURNING epoch

-- name: workflow_enqueue
-- Insert a PENDING workflow unless the id exists (no wake-up: workers poll; the second column, PostgreSQL's
-- notification, is NULL). A live duplicate of (queue, dedup_id) fails on workflows_dedup_idx.
WITH ins AS (
    INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version, parent_id,
                                    dedup_id, run_at, partition_key, deadline_at)
    SELECT %(workflow_id)s, %(name)s, 'PENDING', %(inputs)s, %(queue)s, %(priority)s::int8, %(app_version)s,
           %(parent_id)s, %(dedup_id)s,
           CASE WHEN %(delay)s::float8 > 0 THEN now() + %(delay)s::float8 * interval '1 second' END,
           %(partition_key)s, %(deadline)s::timestamptz
     WHERE %(parent_epoch)s::int8 IS NULL
        OR EXISTS (SELECT 1 FROM {schema}.workflows p
                    WHERE p.workflow_id = %(parent_id)s AND p.epoch = %(parent_epoch)s::int8 AND p.status = 'RUNNING')
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING epoch
)
SELECT ins.epoch, NULL FROM ins

-- name: workflow_release
UPDATE {schema}.workflows
   SET status = 'PENDING', owner = NULL, lease_expires_at = NULL
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s::int8 AND status = 'RUNNING'
RETURNING queue, NULL

-- name: workflow_claim
-- Claim at SERIALIZABLE: one conditional UPDATE. Candidates are the oldest ready rows (expired leases first)
-- of the default queue and of unlimited queues; of the first %(window)s of them %(limit)s are taken at random
-- (the caller passes window = limit, strict FIFO, on a first attempt, and a wider window after a conflict, so
-- claimers contending for the head of a queue spread out). The UPDATE re-checks that each row is still
-- claimable in the state it was read in and bumps its epoch: of two claimers of one row, one updates it and the
-- other gets 40001 (its transaction runs again and finds the row taken). Never SKIP LOCKED under SERIALIZABLE
-- (CockroachDB's SERIALIZABLE locks are best-effort).
WITH candidates AS (
    (SELECT workflow_id, epoch, true AS recovery, 0 AS o FROM {schema}.workflows w
      WHERE status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
        AND owner IS DISTINCT FROM %(owner)s
        AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
        AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s::text[]))
        AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                           AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                                OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                                OR q.partitioned))
      ORDER BY lease_expires_at
      LIMIT %(window)s)
    UNION ALL
    (SELECT workflow_id, epoch, false, 1 FROM {schema}.workflows
      WHERE status = 'PENDING' AND queue IS NULL AND name = ANY(%(names)s)
        AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
        AND (%(any_queue)s OR '' = ANY(%(queues)s::text[]))
        AND (run_at IS NULL OR run_at <= now())
      ORDER BY priority, created_at
      LIMIT %(window)s)
    UNION ALL
    (SELECT workflow_id, epoch, false, 1 FROM {schema}.workflows w
      WHERE status = 'PENDING' AND queue IS NOT NULL AND name = ANY(%(names)s)
        AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
        AND (%(any_queue)s OR queue = ANY(%(queues)s::text[]))
        AND (run_at IS NULL OR run_at <= now())
        AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = w.queue
                           AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                                OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                                OR q.partitioned))
      ORDER BY priority, created_at
      LIMIT %(window)s)
), picked AS (
    SELECT workflow_id, epoch, recovery FROM candidates ORDER BY o, random() LIMIT %(limit)s
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + %(lease)s::float8 * interval '1 second',
       started_at = coalesce(w.started_at, now()),
       claimed_at = CASE WHEN picked.recovery THEN w.claimed_at ELSE now() END,
       recoveries = w.recoveries + CASE WHEN picked.recovery THEN 1 ELSE 0 END,
       claim_token = %(token)s, claim_recovery = picked.recovery
  FROM picked
 WHERE w.workflow_id = picked.workflow_id AND w.epoch = picked.epoch
   AND CASE WHEN picked.recovery
            THEN w.status = 'RUNNING' AND w.lease_expires_at < now() AND w.owner IS DISTINCT FROM %(owner)s
            ELSE w.status = 'PENDING' AND (w.run_at IS NULL OR w.run_at <= now()) END
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, picked.recovery, w.deadline_at

-- name: workflow_claim_lock
-- Claim at READ COMMITTED (where the cluster allows it), first statement: lock up to %(limit)s of the same
-- candidates, skipping rows another claimer holds. A lock may be lost (CockroachDB) without harm: the second
-- statement updates a row only at the epoch read here.
SELECT w.workflow_id, w.epoch, w.status = 'RUNNING' FROM {schema}.workflows w
 WHERE w.workflow_id IN (
        (SELECT workflow_id FROM {schema}.workflows x
          WHERE status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
            AND owner IS DISTINCT FROM %(owner)s
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
            AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s::text[]))
            AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = x.queue
                               AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                                    OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                                    OR q.partitioned))
          ORDER BY lease_expires_at
          LIMIT %(window)s)
        UNION ALL
        (SELECT workflow_id FROM {schema}.workflows
          WHERE status = 'PENDING' AND queue IS NULL AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
            AND (%(any_queue)s OR '' = ANY(%(queues)s::text[]))
            AND (run_at IS NULL OR run_at <= now())
          ORDER BY priority, created_at
          LIMIT %(window)s)
        UNION ALL
        (SELECT workflow_id FROM {schema}.workflows x
          WHERE status = 'PENDING' AND queue IS NOT NULL AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
            AND (%(any_queue)s OR queue = ANY(%(queues)s::text[]))
            AND (run_at IS NULL OR run_at <= now())
            AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = x.queue
                               AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                                    OR q.partition_concurrency IS NOT NULL OR q.rate_count IS NOT NULL
                                    OR q.partitioned))
          ORDER BY priority, created_at
          LIMIT %(window)s))
   AND ((w.status = 'RUNNING' AND w.lease_expires_at < now() AND w.owner IS DISTINCT FROM %(owner)s)
        OR (w.status = 'PENDING' AND (w.run_at IS NULL OR w.run_at <= now())))
 ORDER BY w.status = 'PENDING', w.priority, w.created_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED

-- name: workflow_claim_take
-- Claim at READ COMMITTED, second statement: the rows the first one locked, each only at the epoch it read.
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + %(lease)s::float8 * interval '1 second',
       started_at = coalesce(w.started_at, now()),
       claimed_at = CASE WHEN c.recovery THEN w.claimed_at ELSE now() END,
       recoveries = w.recoveries + CASE WHEN c.recovery THEN 1 ELSE 0 END,
       claim_token = %(token)s, claim_recovery = c.recovery
  FROM (SELECT unnest(%(ids)s::text[]) AS workflow_id, unnest(%(epochs)s::int8[]) AS epoch,
               unnest(%(recovery)s::bool[]) AS recovery) c
 WHERE w.workflow_id = c.workflow_id AND w.epoch = c.epoch
   AND CASE WHEN c.recovery
            THEN w.status = 'RUNNING' AND w.lease_expires_at < now() AND w.owner IS DISTINCT FROM %(owner)s
            ELSE w.status = 'PENDING' AND (w.run_at IS NULL OR w.run_at <= now()) END
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, c.recovery, w.deadline_at

-- name: lease_renew
-- Heartbeat: record the worker and extend every lease it still holds; returns what it holds.
WITH hb AS (
    INSERT INTO {schema}.workers (worker_id, hostname, pid)
    VALUES (%(owner)s, %(hostname)s, %(pid)s)
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
    RETURNING worker_id
)
UPDATE {schema}.workflows
   SET lease_expires_at = now() + %(lease)s::float8 * interval '1 second'
 WHERE owner = %(owner)s AND status = 'RUNNING'
RETURNING workflow_id, epoch

-- name: lease_renew_no_worker
UPDATE {schema}.workflows
   SET lease_expires_at = now() + %(lease)s::float8 * interval '1 second'
 WHERE owner = %(owner)s AND status = 'RUNNING'
RETURNING workflow_id, epoch

-- name: step_record
-- One round trip per checkpoint: insert only while our epoch owns the workflow. The read of the workflow row
-- and a concurrent claim's write of it cannot both commit under SERIALIZABLE: one of them runs again.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at)
SELECT %(workflow_id)s, %(step_id)s::int8, %(name)s, %(output)s::text, %(error)s::text, %(epoch)s::int8,
       %(attempts)s::int8, %(started_at)s::timestamptz
 WHERE EXISTS (SELECT 1 FROM {schema}.workflows
                WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s::int8 AND status = 'RUNNING')
ON CONFLICT (workflow_id, step_id) DO NOTHING
RETURNING finished_at

-- name: workflow_lock_epoch
-- Inside a transactional step, just before its checkpoint: the workflow row read at the latest version
-- (a locking read: on PostgreSQL at SERIALIZABLE a takeover committed since the transaction's snapshot makes
-- it fail with 40001; on CockroachDB it reads past its snapshot), so a takeover that committed while the
-- step's body ran fences the checkpoint instead of being serialized after it.
SELECT epoch, status FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s FOR UPDATE

-- name: step_insert
-- Inside a fenced transaction: record the checkpoint.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at)
VALUES (%(workflow_id)s, %(step_id)s::int8, %(name)s, %(output)s::text, %(error)s::text, %(epoch)s::int8,
        %(attempts)s::int8, %(started_at)s::timestamptz)
RETURNING finished_at

-- name: workflow_fence
-- Inside a transaction: our epoch still owns the workflow (a concurrent claim conflicts with this read).
SELECT 1 FROM {schema}.workflows
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s::int8 AND status = 'RUNNING'

-- name: message_send
-- Deliver a message to an existing workflow (idempotent by sender key). A send from workflow code is fenced
-- like a checkpoint (the sender's epoch must still own it); the last column says whether the fence held.
WITH sender AS (
    SELECT %(sender_id)s::text IS NULL
           OR EXISTS (SELECT 1 FROM {schema}.workflows
                       WHERE workflow_id = %(sender_id)s::text AND epoch = %(sender_epoch)s::int8
                         AND status = 'RUNNING') AS ok
), ins AS (
    INSERT INTO {schema}.messages (workflow_id, topic, body, sender_key)
    SELECT %(workflow_id)s, %(topic)s, %(body)s, %(sender_key)s::text
     WHERE EXISTS (SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s)
       AND (SELECT ok FROM sender)
    ON CONFLICT (workflow_id, sender_key) WHERE sender_key IS NOT NULL DO NOTHING
    RETURNING message_id
)
SELECT EXISTS (SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s),
       (SELECT count(*) FROM ins),
       NULL,
       (SELECT ok FROM sender)

-- name: message_take
-- Inside the receive transaction: consume the oldest unconsumed message of a topic.
UPDATE {schema}.messages
   SET consumed_at = now(), consumed_step = %(step_id)s::int8
 WHERE workflow_id = %(workflow_id)s
   AND message_id = (SELECT message_id FROM {schema}.messages
                      WHERE workflow_id = %(workflow_id)s AND topic = %(topic)s AND consumed_at IS NULL
                      ORDER BY message_id LIMIT 1)
   AND consumed_at IS NULL
RETURNING body

-- name: queue_lock
-- First statement of a limited claim's transaction: one claimer per queue at a time. Another claimer's lock
-- makes this fail at once (55P03): that claimer skips the queue this round.
SELECT concurrency, worker_concurrency, partition_concurrency, rate_count, rate_period, partitioned,
       last_partition
  FROM {schema}.queues WHERE name = %(queue)s
   FOR UPDATE NOWAIT

-- name: queue_room
-- How many new starts the limits allow now, and how many expired leases this worker may take over.
WITH mine AS (
    SELECT count(*) AS n FROM {schema}.workflows
     WHERE queue = %(queue)s AND status = 'RUNNING' AND owner = %(owner)s
), worker_room AS (
    SELECT coalesce(%(worker_concurrency)s::int8 - greatest((SELECT n FROM mine), %(running_here)s::int8),
                    %(limit)s::int8) AS n
)
SELECT greatest(0, least(
           %(limit)s::int8,
           (SELECT n FROM worker_room),
           coalesce(%(concurrency)s::int8 - (SELECT count(*) FROM {schema}.workflows
                                               WHERE queue = %(queue)s AND status = 'RUNNING'), %(limit)s::int8),
           coalesce(%(rate_count)s::int8 - (SELECT count(*) FROM {schema}.workflows
                                              WHERE queue = %(queue)s AND claimed_at IS NOT NULL
                                                AND claimed_at > now() - %(rate_period)s::float8 * interval '1 second'),
                    %(limit)s::int8))),
       greatest(0, least(%(limit)s::int8, (SELECT n FROM worker_room)))

-- name: queue_reclaim
-- Take over expired leases of a limited queue (recovery), within this worker's room.
WITH picked AS (
    SELECT workflow_id, epoch FROM {schema}.workflows
     WHERE queue = %(queue)s AND status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
       AND owner IS DISTINCT FROM %(owner)s
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
     ORDER BY lease_expires_at
     LIMIT %(n)s
)
UPDATE {schema}.workflows w
   SET owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + %(lease)s::float8 * interval '1 second', recoveries = w.recoveries + 1,
       claim_token = %(token)s, claim_recovery = true
  FROM picked
 WHERE w.workflow_id = picked.workflow_id AND w.epoch = picked.epoch
   AND w.status = 'RUNNING' AND w.lease_expires_at < now()
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, true, w.deadline_at

-- name: queue_claim
-- Start up to %(n)s of the oldest ready workflows (unpartitioned queues), n computed by queue_room.
WITH picked AS (
    SELECT workflow_id, epoch FROM {schema}.workflows
     WHERE status = 'PENDING' AND queue = %(queue)s AND name = ANY(%(names)s)
       AND (run_at IS NULL OR run_at <= now())
       AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
     ORDER BY priority, created_at
     LIMIT %(n)s
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + %(lease)s::float8 * interval '1 second', started_at = coalesce(w.started_at, now()),
       claimed_at = now(), claim_token = %(token)s, claim_recovery = false
  FROM picked
 WHERE w.workflow_id = picked.workflow_id AND w.epoch = picked.epoch AND w.status = 'PENDING'
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, false, w.deadline_at

-- name: queue_claim_partitioned
-- Partitioned queues: walk the tenants with ready work (a loose index scan) starting after the tenant where the
-- last claim stopped and wrapping around once, take the head of each tenant's backlog (at most %(n)s rows each,
-- then only as many as its per-partition room allows), then interleave tenants: every tenant's first item
-- before anyone's second. (The PostgreSQL statement limits each tenant's scan by its room; here the room is
-- applied after a scan limited by a constant, which CockroachDB requires of LIMIT.)
WITH RECURSIVE keys(k, depth, wrapped) AS (
    (SELECT k, 1, wrapped FROM (
        (SELECT partition_key AS k, false AS wrapped FROM {schema}.workflows
          WHERE status = 'PENDING' AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key > coalesce(%(cursor)s::text, '') AND (run_at IS NULL OR run_at <= now())
            AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
          ORDER BY partition_key LIMIT 1)
        UNION ALL
        (SELECT partition_key, true FROM {schema}.workflows
          WHERE status = 'PENDING' AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key <= coalesce(%(cursor)s::text, '') AND (run_at IS NULL OR run_at <= now())
            AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s::text[]))
          ORDER BY partition_key LIMIT 1)
     ) first_key ORDER BY wrapped LIMIT 1)
    UNION ALL
    SELECT nxt.k, keys.depth + 1, nxt.wrapped
      FROM keys CROSS JOIN LATERAL (
            SELECT coalesce(
                       (SELECT w.partition_key FROM {schema}.workflows w
                         WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                           AND w.partition_key > keys.k AND (w.run_at IS NULL OR w.run_at <= now())
                           AND w.name = ANY(%(names)s)
                           AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                                OR w.app_version = ANY(%(versions)s::text[]))
                           AND (NOT keys.wrapped OR w.partition_key <= coalesce(%(cursor)s::text, ''))
                         ORDER BY w.partition_key LIMIT 1),
                       CASE WHEN NOT keys.wrapped THEN
                           (SELECT w.partition_key FROM {schema}.workflows w
                             WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                               AND w.partition_key <= coalesce(%(cursor)s::text, '')
                               AND (w.run_at IS NULL OR w.run_at <= now()) AND w.name = ANY(%(names)s)
                               AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                                    OR w.app_version = ANY(%(versions)s::text[]))
                             ORDER BY w.partition_key LIMIT 1) END) AS k,
                   keys.wrapped OR NOT EXISTS (
                       SELECT 1 FROM {schema}.workflows w
                        WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key IS NOT NULL
                          AND w.partition_key > keys.k AND (w.run_at IS NULL OR w.run_at <= now())
                          AND w.name = ANY(%(names)s)
                          AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL
                               OR w.app_version = ANY(%(versions)s::text[]))) AS wrapped
           ) nxt
     WHERE keys.k IS NOT NULL AND keys.depth < %(max_partitions)s
       AND NOT (keys.wrapped AND nxt.k IS NULL)
), walk AS (
    SELECT DISTINCT k FROM keys WHERE k IS NOT NULL
), running AS (
    SELECT r.partition_key AS k, count(*) AS n FROM {schema}.workflows r
     WHERE r.queue = %(queue)s AND r.status = 'RUNNING' AND r.partition_key IN (SELECT k FROM walk)
     GROUP BY r.partition_key
), heads AS (
    SELECT h.workflow_id, h.epoch, h.partition_key, h.priority, h.created_at,
           row_number() OVER (PARTITION BY h.partition_key ORDER BY h.priority, h.created_at) AS turn
      FROM walk CROSS JOIN LATERAL (
            SELECT w.workflow_id, w.epoch, w.partition_key, w.priority, w.created_at FROM {schema}.workflows w
             WHERE w.status = 'PENDING' AND w.queue = %(queue)s AND w.partition_key = walk.k
               AND w.name = ANY(%(names)s) AND (w.run_at IS NULL OR w.run_at <= now())
               AND (%(versions)s::text[] IS NULL OR w.app_version IS NULL OR w.app_version = ANY(%(versions)s::text[]))
             ORDER BY w.priority, w.created_at
             LIMIT %(n)s) h
), chosen AS (
    SELECT heads.workflow_id, heads.epoch, heads.partition_key FROM heads LEFT JOIN running ON running.k = heads.partition_key
     WHERE heads.turn <= coalesce(%(partition_concurrency)s::int8 - coalesce(running.n, 0), %(n)s::int8)
     ORDER BY heads.turn, heads.priority, heads.created_at
     LIMIT %(n)s
)
UPDATE {schema}.workflows w
   SET status = 'RUNNING', owner = %(owner)s, epoch = w.epoch + 1,
       lease_expires_at = now() + %(lease)s::float8 * interval '1 second', started_at = coalesce(w.started_at, now()),
       claimed_at = now(), claim_token = %(token)s, claim_recovery = false
  FROM chosen
 WHERE w.workflow_id = chosen.workflow_id AND w.epoch = chosen.epoch AND w.status = 'PENDING'
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, false, w.deadline_at, w.partition_key

-- name: monitor_workers
SELECT k.worker_id, k.hostname, k.pid, k.started_at, k.heartbeat_at,
       k.heartbeat_at > now() - %(alive)s::float8 * interval '1 second' AS alive,
       (SELECT count(*) FROM {schema}.workflows w
         WHERE w.owner = k.worker_id AND w.status = 'RUNNING') AS claims
  FROM {schema}.workers k
 ORDER BY k.heartbeat_at DESC
 LIMIT %(limit)s

-- name: monitor_queues
-- Depth and in-flight per queue (workflows_active_queue_idx), with the declared limits.
SELECT a.queue, a.depth, a.in_flight, q.concurrency,
       CASE WHEN q.rate_count IS NOT NULL AND q.rate_period > 0 THEN q.rate_count::float8 / q.rate_period END
  FROM (SELECT coalesce(queue, 'default') AS queue,
               count(*) FILTER (WHERE status = 'PENDING') AS depth,
               count(*) FILTER (WHERE status = 'RUNNING') AS in_flight
          FROM {schema}.workflows
         WHERE status IN ('PENDING', 'RUNNING')
           AND (%(name)s::text IS NULL OR name = %(name)s::text)
           AND (%(queue)s::text IS NULL OR queue = %(queue)s::text
                OR (%(queue)s::text = 'default' AND queue IS NULL))
         GROUP BY 1
         ORDER BY 1
         LIMIT 100) a
  LEFT JOIN {schema}.queues q ON q.name = a.queue
 ORDER BY 1

-- name: monitor_finished
-- Finished workflows per time bucket and status over the window (workflows_finished_idx).
SELECT to_timestamp(floor(extract(epoch FROM finished_at)::float8 / %(bucket)s::float8) * %(bucket)s::float8)
           AS bucket,
       status, count(*)
  FROM {schema}.workflows
 WHERE finished_at >= now() - %(window)s::float8 * interval '1 second'
   AND (%(name)s::text IS NULL OR name = %(name)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text OR (%(queue)s::text = 'default' AND queue IS NULL))
 GROUP BY 1, 2

-- name: monitor_latency
-- p50/p95/p99 (seconds) of the newest finished workflows in the window, and of their steps.
WITH recent AS (
    SELECT workflow_id, started_at, finished_at
      FROM {schema}.workflows
     WHERE finished_at >= now() - %(window)s::float8 * interval '1 second'
       AND started_at IS NOT NULL
       AND (%(name)s::text IS NULL OR name = %(name)s::text)
       AND (%(queue)s::text IS NULL OR queue = %(queue)s::text OR (%(queue)s::text = 'default' AND queue IS NULL))
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

-- name: call_outcome_record
-- Last statement of a control operation's transaction (cancel, resume, fork, gc, schedule_define): its
-- answer under the call's token, committed with its writes. The PostgreSQL statement also prunes old rows in
-- a CTE; CockroachDB refuses a statement that modifies one table twice, so the prune is its own statement
-- (call_outcome_prune), run just before this one in the same transaction.
INSERT INTO {schema}.call_outcomes (token, operation, result) VALUES (%(token)s, %(operation)s, %(result)s)

-- name: call_outcome_prune
-- Answers older than %(keep)s seconds (far beyond any call's retries) are deleted.
DELETE FROM {schema}.call_outcomes WHERE created_at < now() - %(keep)s::float8 * interval '1 second'

-- name: workflow_cancel
-- Cancel a workflow and its unfinished descendants; the epoch bump fences their owners off (a checkpoint in
-- flight conflicts with this write under SERIALIZABLE: one of the two runs again).
WITH RECURSIVE tree(workflow_id) AS (
    SELECT workflow_id FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s
    UNION
    SELECT c.workflow_id FROM {schema}.workflows c JOIN tree ON c.parent_id = tree.workflow_id
)
UPDATE {schema}.workflows w
   SET status = 'CANCELLED', error_type = 'WorkflowCancelledError', finished_at = now(),
       -- descendants remember which cancel ended them: resuming that workflow resumes exactly those
       error = CASE WHEN w.workflow_id = %(workflow_id)s::text THEN %(error)s::text
                    ELSE jsonb_set(%(error)s::text::jsonb, ARRAY['cancelled_with'],
                                   to_jsonb(%(workflow_id)s::text))::text
               END,
       owner = NULL, lease_expires_at = NULL, epoch = w.epoch + 1
  FROM tree
 WHERE w.workflow_id = tree.workflow_id AND w.status IN ('PENDING', 'RUNNING')
RETURNING w.workflow_id

-- name: workflow_resume_tree
-- The workflow and the descendants its own cancel cancelled.
WITH RECURSIVE tree(workflow_id) AS (
    SELECT workflow_id FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s
    UNION
    SELECT c.workflow_id FROM {schema}.workflows c JOIN tree ON c.parent_id = tree.workflow_id
     WHERE c.status = 'CANCELLED' AND left(c.error, 1) = chr(123)
       AND c.error::jsonb ->> 'cancelled_with' = %(workflow_id)s::text
)
SELECT workflow_id FROM tree ORDER BY workflow_id

-- name: workflow_resume
UPDATE {schema}.workflows
   SET status = 'PENDING', output = NULL, error = NULL, error_type = NULL, finished_at = NULL, owner = NULL,
       lease_expires_at = NULL, epoch = epoch + 1, run_at = NULL, deadline_at = %(deadline)s::timestamptz
 WHERE workflow_id = ANY(%(workflow_ids)s::text[]) AND status IN ('CANCELLED', 'ERROR')
RETURNING workflow_id, queue, NULL

-- name: workflow_fork_insert
-- epoch 1: its first claim (epoch 2) loads the copied checkpoints, as for any workflow that ran before.
INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version,
                                forked_from, deadline_at, epoch, partition_key)
SELECT %(new_id)s, w.name, 'PENDING', w.inputs, w.queue, w.priority, %(app_version)s::text, w.workflow_id,
       %(deadline)s::timestamptz, 1, w.partition_key
  FROM {schema}.workflows w WHERE w.workflow_id = %(source_id)s
ON CONFLICT (workflow_id) DO NOTHING
RETURNING epoch, queue, NULL

-- name: workflow_gc_pick
-- One batch of retention, first statement: the ids it deletes (finished long enough ago, never a workflow a
-- remaining workflow's steps refer to), read in the same transaction as the delete. (The PostgreSQL backend's
-- single workflow_gc statement deletes from workflows in a CTE over a locked pick of the same table.)
SELECT w.workflow_id FROM {schema}.workflows w
 WHERE w.finished_at IS NOT NULL AND w.finished_at < now() - %(age)s::float8 * interval '1 second'
   AND w.status IN ('SUCCESS', 'ERROR', 'CANCELLED')
   AND NOT EXISTS (SELECT 1 FROM {schema}.steps r
                    WHERE (r.name LIKE 'start:%%' OR r.name LIKE 'enqueue:%%')
                      AND r.output = to_json(w.workflow_id)::text AND r.workflow_id <> w.workflow_id)
 ORDER BY w.finished_at
 LIMIT %(batch)s

-- name: workflow_gc_delete
-- Second statement: delete those workflows with their steps, messages, events and streams.
WITH del_steps AS (
    DELETE FROM {schema}.steps WHERE workflow_id = ANY(%(workflow_ids)s::text[]) RETURNING workflow_id
), del_messages AS (
    DELETE FROM {schema}.messages WHERE workflow_id = ANY(%(workflow_ids)s::text[]) RETURNING workflow_id
), del_events AS (
    DELETE FROM {schema}.events WHERE workflow_id = ANY(%(workflow_ids)s::text[]) RETURNING workflow_id
), del_streams AS (
    DELETE FROM {schema}.streams WHERE workflow_id = ANY(%(workflow_ids)s::text[]) RETURNING workflow_id
)
DELETE FROM {schema}.workflows WHERE workflow_id = ANY(%(workflow_ids)s::text[])
RETURNING workflow_id

-- name: workflow_gc_count
SELECT count(*) FROM (
    SELECT 1 FROM {schema}.workflows w
     WHERE w.finished_at IS NOT NULL AND w.finished_at < now() - %(age)s::float8 * interval '1 second'
       AND w.status IN ('SUCCESS', 'ERROR', 'CANCELLED')
       AND NOT EXISTS (SELECT 1 FROM {schema}.steps r
                        WHERE (r.name LIKE 'start:%%' OR r.name LIKE 'enqueue:%%')
                          AND r.output = to_json(w.workflow_id)::text AND r.workflow_id <> w.workflow_id)
     LIMIT %(batch)s) c

-- name: workers_gc
DELETE FROM {schema}.workers WHERE heartbeat_at < now() - %(age)s::float8 * interval '1 second'
