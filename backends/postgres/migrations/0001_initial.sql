-- kit schema v1: workflows, step checkpoints, workers.
-- JSON values are stored as text (exact bytes, key order kept); cast to jsonb in ad-hoc SQL.

CREATE TABLE {schema}.workflows (
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
CREATE INDEX workflows_pending_idx ON {schema}.workflows (priority, created_at) WHERE status = 'PENDING';
CREATE INDEX workflows_lease_idx ON {schema}.workflows (lease_expires_at) WHERE status = 'RUNNING';
CREATE INDEX workflows_owner_idx ON {schema}.workflows (owner) WHERE status = 'RUNNING';
-- Observability: listings by time, status, name; errors by finish time.
CREATE INDEX workflows_created_idx ON {schema}.workflows (created_at);
CREATE INDEX workflows_status_created_idx ON {schema}.workflows (status, created_at);
CREATE INDEX workflows_name_created_idx ON {schema}.workflows (name, created_at);
CREATE INDEX workflows_error_finished_idx ON {schema}.workflows (finished_at) WHERE status = 'ERROR';
CREATE INDEX workflows_parent_idx ON {schema}.workflows (parent_id) WHERE parent_id IS NOT NULL;

-- One row per checkpointed step; the primary key is the last line of defence against duplicates.
CREATE TABLE {schema}.steps (
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    name        text        NOT NULL,
    output      text,
    error       text,
    epoch       bigint      NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step_id)
);
CREATE INDEX steps_name_finished_idx ON {schema}.steps (name, finished_at);

CREATE TABLE {schema}.workers (
    worker_id    text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_heartbeat_idx ON {schema}.workers (heartbeat_at);
