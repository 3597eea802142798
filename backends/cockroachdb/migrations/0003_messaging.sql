-- kit schema v3: messages between workflows and events published by workflows.

CREATE TABLE IF NOT EXISTS {schema}.messages (
    workflow_id   text        NOT NULL,  -- the receiving workflow
    message_id    bigint      GENERATED ALWAYS AS IDENTITY,
    topic         text        NOT NULL DEFAULT '',
    body          text        NOT NULL,
    sender_key    text,                  -- idempotency key of a send made by a workflow step
    created_at    timestamptz NOT NULL DEFAULT now(),
    consumed_at   timestamptz,
    consumed_step integer,               -- the receiving workflow's step that consumed it
    PRIMARY KEY (workflow_id, message_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_key_idx ON {schema}.messages (workflow_id, sender_key)
    WHERE sender_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_unconsumed_idx ON {schema}.messages (workflow_id, topic, message_id)
    WHERE consumed_at IS NULL;

CREATE TABLE IF NOT EXISTS {schema}.events (
    workflow_id text        NOT NULL,
    key         text        NOT NULL,
    value       text,
    step_id     integer     NOT NULL,  -- the step of the publishing workflow that set this value
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, key)
);
