-- Statements of the Citus backend beyond the PostgreSQL ones (overrides.sql replaces some of those). Unless a
-- statement says otherwise it is a router query: every distributed table in it is filtered on its
-- distribution column by a parameter (never by an expression Citus would have to push down), so it runs on
-- one shard. "multi-shard" marks the few that read across shards; none of those takes a row lock.

-- Creating workflows -------------------------------------------------------------------------------------

-- name: workflow_insert
-- A PENDING workflow (plain INSERT: a duplicate id fails the transaction, so nothing else of it is written).
INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version, parent_id,
                                dedup_id, run_at, partition_key, deadline_at, created_at)
VALUES (%(workflow_id)s, %(name)s, 'PENDING', %(inputs)s, %(queue)s, %(priority)s, %(app_version)s,
        %(parent_id)s, %(dedup_id)s, CASE WHEN %(delay)s > 0 THEN now() + make_interval(secs => %(delay)s) END,
        %(partition_key)s, %(deadline)s, now())
RETURNING epoch

-- name: workflow_insert_owned
-- A workflow started RUNNING by its creator at epoch 1 (plain INSERT, as workflow_insert). In a queue it
-- holds a slot of the queue's home lane (slot_hold, same transaction), so a limited queue counts it.
INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version, parent_id,
                                owner, epoch, lease_expires_at, started_at, deadline_at, created_at, held_lane)
VALUES (%(workflow_id)s, %(name)s, 'RUNNING', %(inputs)s, %(queue)s, %(priority)s, %(app_version)s,
        %(parent_id)s, %(owner)s, 1, now() + make_interval(secs => %(lease)s), now(), %(deadline)s, now(),
        {schema}.lane_of(%(queue)s))
RETURNING epoch

-- name: slot_hold
-- The slot of a workflow started RUNNING in a queue (not through queue_claim): counted, but no rate start.
INSERT INTO {schema}.slots (lane_key, workflow_id, queue, owner, partition_key, running, claimed_at)
VALUES ({schema}.lane_of(%(queue)s), %(workflow_id)s, %(queue)s, %(owner)s, %(partition_key)s, true, '-infinity')

-- name: ready_enqueue
-- The ready row of a workflow enqueued in this transaction (same time values as its workflow row), on the
-- lane ready_lane() chooses (evaluated on the coordinator, in VALUES, before Citus routes the insert).
INSERT INTO {schema}.ready (lane_key, workflow_id, name, queue, priority, app_version, partition_key, run_at,
                            created_at)
VALUES ({schema}.ready_lane(%(workflow_id)s, %(queue)s), %(workflow_id)s, %(name)s, %(queue)s, %(priority)s,
        %(app_version)s, %(partition_key)s,
        CASE WHEN %(delay)s > 0 THEN now() + make_interval(secs => %(delay)s) END, now())

-- name: ready_put
-- The ready row of a workflow that became PENDING again (release, resume) or anew (fork).
INSERT INTO {schema}.ready (lane_key, workflow_id, name, queue, priority, app_version, partition_key, run_at,
                            created_at)
VALUES ({schema}.ready_lane(%(workflow_id)s, %(queue)s), %(workflow_id)s, %(name)s, %(queue)s, %(priority)s,
        %(app_version)s, %(partition_key)s, %(run_at)s, %(created_at)s)
ON CONFLICT (lane_key, workflow_id) DO UPDATE
   SET name = excluded.name, queue = excluded.queue, priority = excluded.priority,
       app_version = excluded.app_version, partition_key = excluded.partition_key, run_at = excluded.run_at,
       created_at = excluded.created_at

-- name: dedup_insert
-- Take a dedup id for a new workflow (plain INSERT: a live holder fails the transaction).
INSERT INTO {schema}.dedup (dkey, workflow_id) VALUES (%(dkey)s, %(workflow_id)s)

-- name: dedup_acquire
-- Take a dedup id back for a resumed workflow; no row: another workflow holds it.
INSERT INTO {schema}.dedup (dkey, workflow_id) VALUES (%(dkey)s, %(workflow_id)s)
ON CONFLICT (dkey) DO UPDATE SET workflow_id = excluded.workflow_id
 WHERE dedup.workflow_id = excluded.workflow_id
RETURNING workflow_id

-- name: dedup_holder
SELECT workflow_id FROM {schema}.dedup WHERE dkey = %(dkey)s

-- name: dedup_release
DELETE FROM {schema}.dedup WHERE dkey = %(dkey)s AND workflow_id = %(workflow_id)s

-- name: child_link
-- On the parent's shard, in the transaction that creates the child.
INSERT INTO {schema}.children (parent_id, child_id) VALUES (%(parent_id)s, %(workflow_id)s)
ON CONFLICT DO NOTHING

-- name: lane_of
-- The lane of a key's shard (coordinator).
SELECT {schema}.lane_of(%(key)s)

-- name: lane_nodes
-- Every lane with the node group holding its shard (coordinator catalog): claims on lanes of one node share
-- a transaction (a one-phase commit).
SELECT l.lane_key, p.groupid FROM {schema}.lanes l JOIN pg_dist_placement p ON p.shardid = l.shard_id
 ORDER BY p.groupid, l.lane_key

-- Finishing and giving back ---------------------------------------------------------------------------------

-- name: workflow_finish_plain
-- Terminal status under the epoch, for a workflow that holds no limited-queue slot and no dedup id (one
-- autocommit router statement); any other finish goes through workflow_lock_row + workflow_finish.
UPDATE {schema}.workflows
   SET status = %(status)s, output = %(output)s, error = %(error)s, error_type = %(error_type)s,
       finished_at = now(), owner = NULL, lease_expires_at = NULL
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
   AND held_lane IS NULL AND dedup_id IS NULL
RETURNING workflow_id

-- name: workflow_lock_row
-- Inside a transaction: hold one workflow row and read what its other rows depend on.
SELECT epoch, status, held_lane, queue, dedup_id, error, name, priority, app_version, partition_key,
       created_at, parent_id
  FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s
   FOR UPDATE

-- name: slot_release
-- A limited-queue slot stops counting as running (it stays for the rate-limit window).
UPDATE {schema}.slots SET running = false WHERE lane_key = %(lane)s AND workflow_id = %(workflow_id)s

-- name: workflow_release_row
-- Give a claim back: PENDING, no owner, no slot (its ready row is written in the same transaction).
UPDATE {schema}.workflows
   SET status = 'PENDING', owner = NULL, lease_expires_at = NULL, held_lane = NULL
 WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
RETURNING name, queue, priority, app_version, partition_key, run_at, created_at

-- Claims of ordinary queues: lanes ---------------------------------------------------------------------------

-- name: ready_lane_best
-- The best ready rows of one lane this claimer may take (no locks), up to limit: the claim merges the lanes'
-- answers into one order (priority, then age) and takes the best. Router (one lane), so a node that fails
-- costs only its own lanes.
SELECT priority, created_at FROM {schema}.ready
 WHERE lane_key = %(lane)s AND name = ANY(%(names)s)
   AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
   AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s))
   AND (queue IS NULL OR NOT (queue = ANY(%(limited)s)))
   AND (run_at IS NULL OR run_at <= now())
 ORDER BY priority, created_at
 LIMIT %(limit)s

-- name: ready_take
-- Inside a claim transaction: take up to n ready rows of one lane (SKIP LOCKED: claimers never wait for
-- each other), best first.
DELETE FROM {schema}.ready r
 WHERE r.lane_key = %(lane)s
   AND r.workflow_id IN (
        SELECT workflow_id FROM {schema}.ready
         WHERE lane_key = %(lane)s AND name = ANY(%(names)s)
           AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
           AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s))
           AND (queue IS NULL OR NOT (queue = ANY(%(limited)s)))
           AND (run_at IS NULL OR run_at <= now())
         ORDER BY priority, created_at
         LIMIT %(n)s
           FOR UPDATE SKIP LOCKED)
RETURNING r.workflow_id

-- name: ready_claim
-- In the same transaction: the taken workflows (one shard: the lane's) start under a new epoch. A row that is
-- no longer PENDING (cancelled meanwhile) is not claimed; its ready row is gone all the same.
UPDATE {schema}.workflows
   SET status = 'RUNNING', owner = %(owner)s, epoch = epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s), started_at = least(started_at, now()),
       claimed_at = now(), claim_token = %(token)s, claim_recovery = false
 WHERE workflow_id = ANY(%(ids)s) AND status = 'PENDING'
RETURNING workflow_id, name, inputs, epoch, false, deadline_at

-- name: expired_candidates
-- multi-shard, no locks: RUNNING workflows whose lease expired (workflows_lease_idx), never our own; each is
-- then taken over by a compare-and-set of its epoch (expired_claim).
SELECT workflow_id, epoch, held_lane FROM {schema}.workflows
 WHERE status = 'RUNNING' AND lease_expires_at < now() AND name = ANY(%(names)s)
   AND owner IS DISTINCT FROM %(owner)s
   AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
   AND (%(any_queue)s OR coalesce(queue, '') = ANY(%(queues)s))
   AND (queue IS NULL OR NOT (queue = ANY(%(limited)s)))
 ORDER BY lease_expires_at
 LIMIT %(limit)s

-- name: expired_claim
-- Take over one expired lease: a compare-and-set of the epoch seen, so of two claimers one wins. The row is
-- first locked FOR UPDATE (SKIP LOCKED) in the subquery, as PostgreSQL's claims do: a plain UPDATE takes only
-- FOR NO KEY UPDATE, which does not conflict with the FOR KEY SHARE a checkpoint in flight holds on the row
-- (step_record, workflow_fence), so the takeover would commit under it and the old owner's checkpoint after
-- it (a committed step run twice). FOR UPDATE conflicts: a workflow with a checkpoint in flight is skipped
-- this round. Router statement (the outer UPDATE and the subquery both filtered on the id).
UPDATE {schema}.workflows w
   SET owner = %(owner)s, epoch = w.epoch + 1, lease_expires_at = now() + make_interval(secs => %(lease)s),
       recoveries = w.recoveries + 1, held_lane = CASE WHEN %(keep_slot)s THEN w.held_lane END,
       claim_token = %(token)s, claim_recovery = true
  FROM (SELECT workflow_id FROM {schema}.workflows
         WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status = 'RUNNING'
           AND lease_expires_at < now() AND owner IS DISTINCT FROM %(owner)s
           FOR UPDATE SKIP LOCKED) pick
 WHERE w.workflow_id = %(workflow_id)s AND w.workflow_id = pick.workflow_id
RETURNING w.workflow_id, w.name, w.inputs, w.epoch, true, w.deadline_at

-- Claims of limited queues: the home lane --------------------------------------------------------------------

-- name: queue_state_ensure
INSERT INTO {schema}.queue_state (lane_key, queue) VALUES (%(lane)s, %(queue)s) ON CONFLICT DO NOTHING

-- name: queue_state_lock
-- First statement of a limited claim's transaction: one claimer per queue at a time; the others skip it.
SELECT last_partition FROM {schema}.queue_state
 WHERE lane_key = %(lane)s AND queue = %(queue)s
   FOR UPDATE SKIP LOCKED

-- name: slots_purge
-- Slots that no longer count for anything (not running, older than the rate-limit window).
DELETE FROM {schema}.slots
 WHERE lane_key = %(lane)s AND queue = %(queue)s AND NOT running
   AND claimed_at < now() - make_interval(secs => %(keep)s)

-- name: slots_count
-- Under the queue_state lock, on the node that holds every slot of the queue: running now, running for
-- this worker, and starts inside the rate window.
SELECT count(*) FILTER (WHERE running),
       count(*) FILTER (WHERE running AND owner = %(owner)s),
       count(*) FILTER (WHERE claimed_at > now() - make_interval(secs => %(rate_period)s))
  FROM {schema}.slots
 WHERE lane_key = %(lane)s AND queue = %(queue)s

-- name: limited_expired
-- multi-shard, no locks: expired leases of a limited queue's running workflows (taken over by expired_claim
-- with keep_slot, then slot_owner).
SELECT workflow_id, epoch FROM {schema}.workflows
 WHERE status = 'RUNNING' AND held_lane = %(lane)s AND queue = %(queue)s AND lease_expires_at < now()
   AND name = ANY(%(names)s) AND owner IS DISTINCT FROM %(owner)s
   AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
 ORDER BY lease_expires_at
 LIMIT %(n)s

-- name: slot_owner
UPDATE {schema}.slots SET owner = %(owner)s WHERE lane_key = %(lane)s AND workflow_id = %(workflow_id)s

-- name: limited_take
-- Take up to n of the best ready rows of a limited queue (unpartitioned) from its home lane.
DELETE FROM {schema}.ready r
 WHERE r.lane_key = %(lane)s
   AND r.workflow_id IN (
        SELECT workflow_id FROM {schema}.ready
         WHERE lane_key = %(lane)s AND queue = %(queue)s AND name = ANY(%(names)s)
           AND (run_at IS NULL OR run_at <= now())
           AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
         ORDER BY priority, created_at
         LIMIT %(n)s
           FOR UPDATE SKIP LOCKED)
RETURNING r.workflow_id, r.partition_key

-- name: limited_take_partitioned
-- Partitioned queues, on the home lane (every recursion step filtered on it): walk the tenants with ready work
-- after the cursor (wrapping around once), take the head of each tenant's backlog up to its room (partition
-- concurrency minus its running slots), interleave tenants (every first item before anyone's second), take n.
WITH RECURSIVE keys(k, depth, wrapped) AS (
    (SELECT k, 1, wrapped FROM (
        (SELECT partition_key AS k, false AS wrapped FROM {schema}.ready
          WHERE lane_key = %(lane)s AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key > coalesce(%(cursor)s, '') AND (run_at IS NULL OR run_at <= now())
            AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
          ORDER BY partition_key LIMIT 1)
        UNION ALL
        (SELECT partition_key, true FROM {schema}.ready
          WHERE lane_key = %(lane)s AND queue = %(queue)s AND partition_key IS NOT NULL
            AND partition_key <= coalesce(%(cursor)s, '') AND (run_at IS NULL OR run_at <= now())
            AND name = ANY(%(names)s)
            AND (%(versions)s::text[] IS NULL OR app_version IS NULL OR app_version = ANY(%(versions)s))
          ORDER BY partition_key LIMIT 1)
     ) first_key ORDER BY wrapped LIMIT 1)
    UNION ALL
    SELECT nxt.k, keys.depth + 1, nxt.wrapped
      FROM keys CROSS JOIN LATERAL (
            SELECT coalesce(
                       (SELECT r.partition_key FROM {schema}.ready r
                         WHERE r.lane_key = %(lane)s AND r.queue = %(queue)s AND r.partition_key IS NOT NULL
                           AND r.partition_key > keys.k AND (r.run_at IS NULL OR r.run_at <= now())
                           AND r.name = ANY(%(names)s)
                           AND (%(versions)s::text[] IS NULL OR r.app_version IS NULL
                                OR r.app_version = ANY(%(versions)s))
                           AND (NOT keys.wrapped OR r.partition_key <= coalesce(%(cursor)s, ''))
                         ORDER BY r.partition_key LIMIT 1),
                       CASE WHEN NOT keys.wrapped THEN
                           (SELECT r.partition_key FROM {schema}.ready r
                             WHERE r.lane_key = %(lane)s AND r.queue = %(queue)s AND r.partition_key IS NOT NULL
                               AND r.partition_key <= coalesce(%(cursor)s, '')
                               AND (r.run_at IS NULL OR r.run_at <= now()) AND r.name = ANY(%(names)s)
                               AND (%(versions)s::text[] IS NULL OR r.app_version IS NULL
                                    OR r.app_version = ANY(%(versions)s))
                             ORDER BY r.partition_key LIMIT 1) END) AS k,
                   keys.wrapped OR NOT EXISTS (
                       SELECT 1 FROM {schema}.ready r
                        WHERE r.lane_key = %(lane)s AND r.queue = %(queue)s AND r.partition_key IS NOT NULL
                          AND r.partition_key > keys.k AND (r.run_at IS NULL OR r.run_at <= now())
                          AND r.name = ANY(%(names)s)
                          AND (%(versions)s::text[] IS NULL OR r.app_version IS NULL
                               OR r.app_version = ANY(%(versions)s))) AS wrapped
           ) nxt
     WHERE keys.k IS NOT NULL AND keys.depth < %(max_partitions)s
       AND NOT (keys.wrapped AND nxt.k IS NULL)
), walk AS (
    SELECT DISTINCT k FROM keys WHERE k IS NOT NULL
), heads AS (
    SELECT h.workflow_id, h.partition_key, h.priority, h.created_at,
           row_number() OVER (PARTITION BY h.partition_key ORDER BY h.priority, h.created_at) AS turn
      FROM walk CROSS JOIN LATERAL (
            SELECT r.workflow_id, r.partition_key, r.priority, r.created_at FROM {schema}.ready r
             WHERE r.lane_key = %(lane)s AND r.queue = %(queue)s AND r.partition_key = walk.k
               AND r.name = ANY(%(names)s) AND (r.run_at IS NULL OR r.run_at <= now())
               AND (%(versions)s::text[] IS NULL OR r.app_version IS NULL OR r.app_version = ANY(%(versions)s))
             ORDER BY r.priority, r.created_at
             LIMIT greatest(0, least(
                    %(n)s,
                    coalesce(%(partition_concurrency)s - (SELECT count(*) FROM {schema}.slots s
                                                           WHERE s.lane_key = %(lane)s AND s.queue = %(queue)s
                                                             AND s.partition_key = walk.k AND s.running),
                             %(n)s)))
           ) h
), chosen AS (
    SELECT workflow_id FROM heads ORDER BY turn, priority, created_at LIMIT %(n)s
)
DELETE FROM {schema}.ready d
 USING chosen
 WHERE d.lane_key = %(lane)s AND d.workflow_id = chosen.workflow_id
RETURNING d.workflow_id, d.partition_key

-- name: limited_claim
-- One taken workflow of a limited queue starts under a new epoch holding a slot of the queue's home lane
-- (its shard is anywhere: the claim transaction commits with two-phase commit when it spans nodes).
UPDATE {schema}.workflows
   SET status = 'RUNNING', owner = %(owner)s, epoch = epoch + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s), started_at = least(started_at, now()),
       claimed_at = now(), held_lane = %(lane)s, claim_token = %(token)s, claim_recovery = false
 WHERE workflow_id = %(workflow_id)s AND status = 'PENDING'
RETURNING workflow_id, name, inputs, epoch, false, deadline_at

-- name: slot_take
INSERT INTO {schema}.slots (lane_key, workflow_id, queue, owner, partition_key, running, claimed_at)
VALUES (%(lane)s, %(workflow_id)s, %(queue)s, %(owner)s, %(partition_key)s, true, now())
ON CONFLICT (lane_key, workflow_id) DO UPDATE
   SET owner = excluded.owner, partition_key = excluded.partition_key, running = true,
       claimed_at = excluded.claimed_at

-- name: queue_state_cursor
UPDATE {schema}.queue_state SET last_partition = %(cursor)s WHERE lane_key = %(lane)s AND queue = %(queue)s

-- name: ready_strays
-- multi-shard, no locks: ready rows of a limited queue outside its home lane (enqueued before the queue was
-- declared limited, or while that declaration committed); they are moved home.
SELECT lane_key, workflow_id FROM {schema}.ready
 WHERE queue = %(queue)s AND lane_key <> %(lane)s
 LIMIT 1000

-- name: ready_remove
DELETE FROM {schema}.ready WHERE lane_key = %(lane)s AND workflow_id = %(workflow_id)s
RETURNING name, queue, priority, app_version, partition_key, run_at, created_at

-- Cancel, resume, fork, retention ---------------------------------------------------------------------------

-- name: children_of
-- multi-shard (pruned to the parents' shards), no locks: the children of some workflows.
SELECT parent_id, child_id FROM {schema}.children WHERE parent_id = ANY(%(ids)s)

-- name: cancel_error_of_descendants
-- The error recorded on the descendants a cancel cancels: descendants remember which cancel ended them, so
-- resuming that workflow resumes exactly those (computed once, on the coordinator).
SELECT jsonb_set(%(error)s::text::jsonb, '{{cancelled_with}}', to_jsonb(%(root)s::text))::text

-- name: workflow_cancel_one
UPDATE {schema}.workflows
   SET status = 'CANCELLED', error_type = 'WorkflowCancelledError', finished_at = now(), error = %(error)s,
       owner = NULL, lease_expires_at = NULL, epoch = epoch + 1, held_lane = NULL
 WHERE workflow_id = %(workflow_id)s AND status IN ('PENDING', 'RUNNING')
RETURNING workflow_id

-- name: steps_drop_final_error_one
-- A resumed workflow retries the step whose error ended it: drop that last checkpoint if it is an error.
DELETE FROM {schema}.steps s
 WHERE s.workflow_id = %(workflow_id)s AND s.error IS NOT NULL
   AND s.step_id = (SELECT max(x.step_id) FROM {schema}.steps x WHERE x.workflow_id = %(workflow_id)s)

-- name: workflow_resume_one
UPDATE {schema}.workflows
   SET status = 'PENDING', output = NULL, error = NULL, error_type = NULL, finished_at = NULL, owner = NULL,
       lease_expires_at = NULL, epoch = epoch + 1, run_at = NULL, deadline_at = %(deadline)s, held_lane = NULL
 WHERE workflow_id = %(workflow_id)s AND status IN ('CANCELLED', 'ERROR')
RETURNING workflow_id, name, queue, priority, app_version, partition_key, created_at

-- name: fork_source
SELECT w.name, w.inputs, w.queue, w.priority, (SELECT max(s.step_id) FROM {schema}.steps s
                                                WHERE s.workflow_id = %(source_id)s),
       w.partition_key
  FROM {schema}.workflows w WHERE w.workflow_id = %(source_id)s

-- name: fork_insert
-- epoch 1: its first claim (epoch 2) loads the copied checkpoints, as for any workflow that ran before.
INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, app_version, forked_from,
                                deadline_at, epoch, partition_key, created_at)
VALUES (%(new_id)s, %(name)s, 'PENDING', %(inputs)s, %(queue)s, %(priority)s, %(app_version)s, %(source_id)s,
        %(deadline)s, 1, %(partition_key)s, now())
ON CONFLICT (workflow_id) DO NOTHING
RETURNING epoch, created_at

-- name: fork_read_steps
SELECT step_id, name, output, error, attempts, started_at, finished_at
  FROM {schema}.steps WHERE workflow_id = %(source_id)s AND step_id < %(from_step)s ORDER BY step_id

-- name: fork_copy_step
INSERT INTO {schema}.steps (workflow_id, step_id, name, output, error, epoch, attempts, started_at, finished_at)
VALUES (%(new_id)s, %(step_id)s, %(name)s, %(output)s, %(error)s, 0, %(attempts)s, %(started_at)s,
        %(finished_at)s)

-- name: fork_read_streams
SELECT key, seq, value, closed, step_id, created_at
  FROM {schema}.streams WHERE workflow_id = %(source_id)s AND step_id < %(from_step)s ORDER BY key, seq

-- name: fork_copy_stream
INSERT INTO {schema}.streams (workflow_id, key, seq, value, closed, step_id, created_at)
VALUES (%(new_id)s, %(key)s, %(seq)s, %(value)s, %(closed)s, %(step_id)s, %(created_at)s)

-- name: fork_copy_event
INSERT INTO {schema}.events (workflow_id, key, value, step_id, updated_at)
VALUES (%(new_id)s, %(key)s, %(value)s, %(step_id)s, %(updated_at)s)

-- name: gc_candidates
-- multi-shard, no locks: finished long enough ago (workflows_finished_idx), oldest first.
SELECT workflow_id FROM {schema}.workflows
 WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(age)s)
   AND status IN ('SUCCESS', 'ERROR', 'CANCELLED')
 ORDER BY finished_at
 LIMIT %(limit)s

-- name: gc_references
-- multi-shard, no locks: which candidates a workflow's steps refer to (a parent, or a fork of it, may still
-- resume and re-attach to that child: steps_child_ref_idx).
SELECT workflow_id, output FROM {schema}.steps
 WHERE (name LIKE 'start:%%' OR name LIKE 'enqueue:%%') AND output = ANY(%(outputs)s)

-- name: gc_delete_workflow
-- Inside the batch transaction: the workflow row, re-checked (a resume since the candidate read keeps it).
DELETE FROM {schema}.workflows
 WHERE workflow_id = %(workflow_id)s AND finished_at IS NOT NULL
   AND finished_at < now() - make_interval(secs => %(age)s) AND status IN ('SUCCESS', 'ERROR', 'CANCELLED')
RETURNING parent_id

-- name: gc_delete_steps
DELETE FROM {schema}.steps WHERE workflow_id = %(workflow_id)s

-- name: gc_delete_messages
DELETE FROM {schema}.messages WHERE workflow_id = %(workflow_id)s

-- name: gc_delete_events
DELETE FROM {schema}.events WHERE workflow_id = %(workflow_id)s

-- name: gc_delete_streams
DELETE FROM {schema}.streams WHERE workflow_id = %(workflow_id)s

-- name: gc_delete_children
DELETE FROM {schema}.children WHERE parent_id = %(workflow_id)s

-- name: gc_unlink
DELETE FROM {schema}.children WHERE parent_id = %(parent_id)s AND child_id = %(workflow_id)s

-- Messages ----------------------------------------------------------------------------------------------------

-- name: message_insert
-- Deliver to a workflow, idempotent by sender key, in a transaction that holds the receiver's row (the
-- workflow_hold statement before it: no receiver, no message). VALUES, not INSERT ... SELECT: the identity
-- column makes Citus plan an INSERT ... SELECT into messages on every shard.
INSERT INTO {schema}.messages (workflow_id, topic, body, sender_key)
VALUES (%(workflow_id)s, %(topic)s, %(body)s, %(sender_key)s)
ON CONFLICT (workflow_id, sender_key) WHERE sender_key IS NOT NULL DO NOTHING

-- name: workflow_hold
-- Inside a transaction: the workflow exists, and stays (retention waits) until commit.
SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s FOR KEY SHARE

-- name: workflow_exists
SELECT EXISTS (SELECT 1 FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s)

-- Recorded answers ---------------------------------------------------------------------------------------------

-- name: call_outcomes_gc
-- multi-shard: answers older than %(keep)s seconds (far beyond any call's retries), deleted by workflow_gc in a
-- statement of their own (autocommit: shard locks held only for its duration).
DELETE FROM {schema}.call_outcomes WHERE created_at < now() - make_interval(secs => %(keep)s)

-- name: coordinator_outcome_record
-- The answer of an operation that writes only coordinator tables (schedule_define) or whose commit decision
-- is the coordinator's (migrate), in a plain coordinator table: it commits with those writes. Pruned on the
-- way, as on PostgreSQL (a local statement).
WITH pruned AS (
    DELETE FROM {schema}.coordinator_outcomes WHERE created_at < now() - make_interval(secs => %(keep)s)
)
INSERT INTO {schema}.coordinator_outcomes (token, operation, result) VALUES (%(token)s, %(operation)s, %(result)s)

-- name: coordinator_outcome_get
SELECT result FROM {schema}.coordinator_outcomes WHERE token = %(token)s

-- Lease renewal by node group ------------------------------------------------------------------------------

-- name: lease_beat
-- Coordinator, one statement: the worker's heartbeat row (when it has one) and, for workflows held here
-- whose shard is not known yet, their shard and node group (Citus metadata, read locally).
WITH beat AS (
    INSERT INTO {schema}.workers (worker_id, hostname, pid)
    SELECT %(owner)s, %(hostname)s, %(pid)s WHERE %(hostname)s::text IS NOT NULL
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
)
SELECT w.id, s.shardid, p.groupid
  FROM unnest(%(ids)s::text[]) AS w(id)
  CROSS JOIN LATERAL (SELECT get_shard_id_for_distribution_column(%(table)s, w.id) AS shardid) s
  JOIN pg_dist_placement p ON p.shardid = s.shardid

-- name: lease_renew_shard
-- Extend the leases of some workflows of one shard held by this owner (ids of one shard: a router UPDATE,
-- locking only those rows); the rows returned are the leases still ours.
UPDATE {schema}.workflows SET lease_expires_at = now() + make_interval(secs => %(lease)s)
 WHERE workflow_id = ANY(%(ids)s) AND owner = %(owner)s AND status = 'RUNNING'
RETURNING workflow_id, epoch

-- name: owned_scan
-- multi-shard, no locks: the RUNNING workflows this owner holds (now and then, so a lease the renewal does not
-- know of yet, e.g. a claim whose acknowledgement was lost, is renewed or released like on PostgreSQL).
SELECT workflow_id FROM {schema}.workflows WHERE owner = %(owner)s AND status = 'RUNNING'
