-- kit schema v6: enqueue from plain SQL (any language, any client) with one statement:
--   SELECT kit.enqueue('process_order', args => '["order-42", 1999]', queue => 'orders');
-- The workflow exists if and only if the calling transaction commits; idle workers are woken at commit.

CREATE FUNCTION {schema}.enqueue(
    workflow_name text,
    args          jsonb            DEFAULT '[]',
    kwargs        jsonb            DEFAULT '{{}}',
    queue         text             DEFAULT NULL,
    workflow_id   text             DEFAULT NULL,
    priority      integer          DEFAULT 0,
    delay_seconds double precision DEFAULT 0,
    dedup_id      text             DEFAULT NULL,
    partition_key text             DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    wid  text := coalesce(enqueue.workflow_id, gen_random_uuid()::text);
    spec {schema}.queues%ROWTYPE;
BEGIN
    IF workflow_name IS NULL OR workflow_name = '' THEN
        RAISE EXCEPTION 'kit.enqueue: workflow_name is required' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(args) IS DISTINCT FROM 'array' OR jsonb_typeof(kwargs) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'kit.enqueue: args must be a JSON array and kwargs a JSON object' USING ERRCODE = '22023';
    END IF;
    IF delay_seconds IS NULL OR delay_seconds < 0 THEN
        RAISE EXCEPTION 'kit.enqueue: delay_seconds must be >= 0' USING ERRCODE = '22023';
    END IF;
    IF enqueue.queue IS NOT NULL THEN
        SELECT * INTO spec FROM {schema}.queues q WHERE q.name = enqueue.queue;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'kit.enqueue: unknown queue %: declare it with app.queue(...) first', enqueue.queue
                USING ERRCODE = '22023';
        END IF;
        IF spec.partitioned AND (enqueue.partition_key IS NULL OR enqueue.partition_key = '') THEN
            RAISE EXCEPTION 'kit.enqueue: queue % is partitioned: give partition_key', enqueue.queue
                USING ERRCODE = '22023';
        END IF;
    END IF;
    INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, dedup_id, run_at,
                                    partition_key)
    VALUES (wid, workflow_name, 'PENDING', jsonb_build_object('args', args, 'kwargs', kwargs)::text,
            enqueue.queue, coalesce(enqueue.priority, 0), enqueue.dedup_id,
            CASE WHEN delay_seconds > 0 THEN now() + make_interval(secs => delay_seconds) END,
            enqueue.partition_key)
    ON CONFLICT ON CONSTRAINT workflows_pkey DO NOTHING;
    -- The schema name is a validated identifier; strip the quotes the migration formatter adds.
    PERFORM pg_notify(replace('{schema}', '"', '') || '_wake', 'q:' || coalesce(enqueue.queue, ''));
    RETURN wid;
END
$$;
