-- kit schema v12: answers of control operations, recorded in the transaction that produced them.
-- workflow_cancel / workflow_resume / workflow_fork / workflow_gc / schedule_define / migrate insert their
-- result here under a per-call token, in the same transaction as their writes. After a lost COMMIT
-- acknowledgement the retry reads its token's row first: present, the attempt committed and this is its
-- answer; absent, it rolled back and the operation runs again. Rows are only needed while a call retries
-- (seconds); each insert deletes rows older than a day (call_outcomes_created_idx).
CREATE TABLE {schema}.call_outcomes (
    token      text        PRIMARY KEY,
    operation  text        NOT NULL,
    result     text        NOT NULL,  -- JSON
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_outcomes_created_idx ON {schema}.call_outcomes (created_at);
