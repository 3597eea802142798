-- kit schema v12: answers of control operations, recorded in the transaction that produced them (as
-- backends/postgres/migrations/0012). workflow_cancel / workflow_resume / workflow_fork / workflow_gc /
-- schedule_define insert their result here under a per-call token with their writes; a retry after a lost
-- acknowledgement reads its token's row first (present: that attempt committed, this is its answer; absent:
-- it rolled back). Rows are needed only while a call retries; each record deletes those older than a day.
-- created_at is time-keyed: hash-sharded on a cluster so inserts do not all land on one range.
CREATE TABLE IF NOT EXISTS {schema}.call_outcomes (
    token      text        PRIMARY KEY,
    operation  text        NOT NULL,
    result     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS call_outcomes_created_idx ON {schema}.call_outcomes (created_at){hash_sharded};
