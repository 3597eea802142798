-- kit schema v9: cron schedules (@app.scheduled): definition and cursor, one row per schedule.
CREATE TABLE IF NOT EXISTS {schema}.schedules (
    name             text        PRIMARY KEY,
    workflow_name    text        NOT NULL,
    cron             text        NOT NULL,
    timezone         text        NOT NULL,
    queue            text,
    catch_up         text        NOT NULL CHECK (catch_up IN ('latest', 'none', 'all')),
    max_catch_up     integer     NOT NULL CHECK (max_catch_up >= 1),
    cursor_at        timestamptz NOT NULL,
    last_tick        timestamptz,
    last_workflow_id text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
