-- Statements of the PostgreSQL backend that read differently on Citus (same names, same parameters and
-- result columns). Each is a router query on one shard unless it says otherwise.

-- name: step_record
-- The fenced checkpoint as a pushed-down INSERT ... SELECT: selecting FROM the workflow row (same
-- distribution value as the inserted row) with finished_at given explicitly makes it one router statement
-- (a WHERE EXISTS (...) form is planned as "pull to coordinator"). FOR KEY SHARE as on PostgreSQL.
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at)
SELECT w.workflow_id, %(step_id)s, %(name)s, %(output)s, %(error)s, %(epoch)s, %(attempts)s, %(started_at)s, now()
  FROM {schema}.workflows w
 WHERE w.workflow_id = %(workflow_id)s AND w.epoch = %(epoch)s AND w.status = 'RUNNING'
   FOR KEY SHARE
ON CONFLICT (workflow_id, step_id) DO NOTHING
RETURNING finished_at

-- name: step_insert
-- Inside a fenced transaction: record the checkpoint (finished_at evaluated on the coordinator).
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at)
VALUES (%(workflow_id)s, %(step_id)s, %(name)s, %(output)s, %(error)s, %(epoch)s, %(attempts)s, %(started_at)s,
        now())
RETURNING finished_at

-- name: event_upsert
-- ON CONFLICT DO UPDATE on a distributed table takes immutable expressions only: the time comes in VALUES.
INSERT INTO {schema}.events (workflow_id, key, value, step_id, updated_at)
VALUES (%(workflow_id)s, %(key)s, %(value)s, %(step_id)s, now())
ON CONFLICT (workflow_id, key) DO UPDATE
   SET value = excluded.value, step_id = excluded.step_id, updated_at = excluded.updated_at

-- name: lease_renew
-- Heartbeat in one statement (heartbeat() of migration 0013: the workers upsert on the coordinator, then
-- one multi-shard UPDATE of the owner's RUNNING rows, which locks only the rows it changes).
SELECT workflow_id, epoch FROM {schema}.heartbeat(%(owner)s, %(lease)s, %(hostname)s, %(pid)s)

-- name: lease_renew_no_worker
SELECT workflow_id, epoch FROM {schema}.heartbeat(%(owner)s, %(lease)s, NULL, NULL)

-- name: stream_read
-- One snapshot, one router query: the workflow row and up to limit + 1 stream rows after a position (both
-- filtered on the id itself: a correlated filter alone makes Citus plan every shard). No row at all when the
-- workflow does not exist.
SELECT w.status, s.seq, s.value, s.closed
  FROM {schema}.workflows w
  LEFT JOIN LATERAL (
        SELECT seq, value, closed FROM {schema}.streams
         WHERE workflow_id = %(workflow_id)s AND key = %(key)s AND seq > %(after_seq)s
         ORDER BY seq
         LIMIT %(limit)s + 1) s ON true
 WHERE w.workflow_id = %(workflow_id)s
 ORDER BY s.seq

-- name: monitor_workers
-- Claims per worker counted by one multi-shard aggregate, joined on the coordinator.
SELECT k.worker_id, k.hostname, k.pid, k.started_at, k.heartbeat_at,
       k.heartbeat_at > now() - make_interval(secs => %(alive)s) AS alive, coalesce(c.n, 0) AS claims
  FROM {schema}.workers k
  LEFT JOIN (SELECT owner, count(*) AS n FROM {schema}.workflows WHERE status = 'RUNNING' GROUP BY owner) c
    ON c.owner = k.worker_id
 ORDER BY k.heartbeat_at DESC
 LIMIT %(limit)s

-- name: message_take
-- Inside the receive transaction: consume the oldest unconsumed message of a topic (the outer UPDATE filtered
-- on the id too, so Citus routes it to one shard).
UPDATE {schema}.messages m
   SET consumed_at = now(), consumed_step = %(step_id)s
  FROM (SELECT workflow_id, message_id FROM {schema}.messages
         WHERE workflow_id = %(workflow_id)s AND topic = %(topic)s AND consumed_at IS NULL
         ORDER BY message_id LIMIT 1
           FOR UPDATE SKIP LOCKED) pick
 WHERE m.workflow_id = %(workflow_id)s AND m.workflow_id = pick.workflow_id AND m.message_id = pick.message_id
RETURNING m.body

-- name: call_outcome_record
-- Last statement of a control operation's transaction: its answer under the call's token. call_outcomes is
-- distributed by token (colocated with workflows, migration 0013), so this is a router INSERT on the token's
-- shard, part of the operation's transaction: one more participant of its two-phase commit when that shard
-- is on another node, committed with the writes or not at all. No pruning here (a DELETE by age would be a
-- multi-shard statement in every control transaction): workflow_gc prunes (call_outcomes_gc).
INSERT INTO {schema}.call_outcomes (token, operation, result) VALUES (%(token)s, %(operation)s, %(result)s)
