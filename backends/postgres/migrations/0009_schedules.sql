-- kit schema v9: cron schedules (@app.scheduled). One row per schedule: its definition, as declared by
-- the applications that run it (so `kit schedules` and the monitor can show it), and its cursor.
-- cursor_at: every tick at or before this instant has been handled (enqueued, or skipped by the catch-up
-- policy). Schedulers advance it with a compare-and-set in the same transaction that inserts the tick's
-- workflow, so a tick is enqueued at most once however many workers race, and never lost by a crash.
CREATE TABLE {schema}.schedules (
    name             text        PRIMARY KEY,
    workflow_name    text        NOT NULL,
    cron             text        NOT NULL,
    timezone         text        NOT NULL,
    queue            text,
    catch_up         text        NOT NULL CHECK (catch_up IN ('latest', 'none', 'all')),
    max_catch_up     integer     NOT NULL CHECK (max_catch_up >= 1),
    cursor_at        timestamptz NOT NULL,
    last_tick        timestamptz,          -- the latest tick whose workflow was enqueued
    last_workflow_id text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
