-- kit schema v5: streams written by workflows (write_stream / close_stream) and read by anyone.
-- Keyed by workflow id first, so on Citus the table distributes and colocates with workflows.
-- Append-only: element rows seq 0, 1, 2, ...; closing a stream appends one final row with closed = true
-- (value NULL) at the next seq, so "closed" is read in the same ordered scan as the elements.

CREATE TABLE {schema}.streams (
    workflow_id text        NOT NULL,  -- the writing workflow
    key         text        NOT NULL,
    seq         integer     NOT NULL,  -- position in the stream, from 0; the close row is the last
    value       text,                  -- JSON text of the element; NULL on the close row
    closed      boolean     NOT NULL DEFAULT false,
    step_id     integer     NOT NULL,  -- the writing workflow's step that wrote this row
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, key, seq)
);
