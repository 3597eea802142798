-- kit schema v1 (CockroachDB backend): workflows, step checkpoints, workers.
-- Every statement is idempotent and applied in a transaction of its own (one schema change per transaction,
-- as CockroachDB recommends). Indexes whose key ends in a time are hash-sharded on a CockroachDB cluster (USING
-- HASH: sequential inserts spread over ranges instead of hot-spotting the newest one) and plain on the
-- serializable PostgreSQL profile (the dialect placeholder after their column list).
-- INTEGER is INT8 on CockroachDB; kit's values fit either width.

CREATE TABLE IF NOT EXISTS {schema}.workflows (
    workflow_id      text        PRIMARY KEY,
    name             text        NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('PENDING', 'RUNNING', 'SUCCESS', 'ERROR', 'CANCELLED')),
    inputs           text,
    output           text,
    error            text,
    error_type       text,
    queue            text,
    priority         integer     NOT NULL DEFAULT 0,
    app_version      text,
    parent_id        text,
    owner            text,
    epoch            bigint      NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    recoveries       integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- Claim path: ready work in priority/FIFO order, and expired leases.
CREATE INDEX IF NOT EXISTS workflows_pending_idx ON {schema}.workflows (priority, created_at){hash_sharded} WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS workflows_lease_idx ON {schema}.workflows (lease_expires_at){hash_sharded}
    WHERE status = 'RUNNING';
CREATE INDEX IF NOT EXISTS workflows_owner_idx ON {schema}.workflows (owner) WHERE status = 'RUNNING';
-- Observability: listings by time, status, name; errors by finish time.
CREATE INDEX IF NOT EXISTS workflows_created_idx ON {schema}.workflows (created_at){hash_sharded};
CREATE INDEX IF NOT EXISTS workflows_status_created_idx ON {schema}.workflows (status, created_at){hash_sharded};
CREATE INDEX IF NOT EXISTS workflows_name_created_idx ON {schema}.workflows (name, created_at){hash_sharded};
CREATE INDEX IF NOT EXISTS workflows_error_finished_idx ON {schema}.workflows (finished_at){hash_sharded}
    WHERE status = 'ERROR';
CREATE INDEX IF NOT EXISTS workflows_parent_idx ON {schema}.workflows (parent_id) WHERE parent_id IS NOT NULL;

-- One row per checkpointed step; the primary key is the last line of defence against duplicates.
CREATE TABLE IF NOT EXISTS {schema}.steps (
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    name        text        NOT NULL,
    output      text,
    error       text,
    epoch       bigint      NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT steps_pkey PRIMARY KEY (workflow_id, step_id)
);
CREATE INDEX IF NOT EXISTS steps_name_finished_idx ON {schema}.steps (name, finished_at){hash_sharded};

CREATE TABLE IF NOT EXISTS {schema}.workers (
    worker_id    text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS workers_heartbeat_idx ON {schema}.workers (heartbeat_at){hash_sharded};
