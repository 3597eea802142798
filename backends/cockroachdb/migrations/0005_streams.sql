-- kit schema v5: streams written by workflows (write_stream / close_stream) and read by anyone. Append-only:
-- element rows seq 0, 1, 2, ...; closing a stream appends one final row with closed = true (value NULL).

CREATE TABLE IF NOT EXISTS {schema}.streams (
    workflow_id text        NOT NULL,  -- the writing workflow
    key         text        NOT NULL,
    seq         integer     NOT NULL,  -- position in the stream, from 0; the close row is the last
    value       text,                  -- JSON text of the element; NULL on the close row
    closed      boolean     NOT NULL DEFAULT false,
    step_id     integer     NOT NULL,  -- the writing workflow's step that wrote this row
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, key, seq)
);
