-- kit schema v6: enqueue from plain SQL (any language, any client) with one statement:
--   SELECT kit.enqueue('process_order', args => '["order-42", 1999]', queue => 'orders');
-- The workflow exists if and only if the calling transaction commits; idle workers are woken at commit.
-- requires: sql_enqueue_function

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
    wid      text := coalesce(enqueue.workflow_id, gen_random_uuid()::text);
    spec     {schema}.queues%ROWTYPE;
    existing text;
    holder   text;
BEGIN
    IF workflow_name IS NULL OR workflow_name = '' THEN
        RAISE EXCEPTION 'kit.enqueue: workflow_name is required' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(args) IS DISTINCT FROM 'array' OR jsonb_typeof(kwargs) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'kit.enqueue: args must be a JSON array and kwargs a JSON object' USING ERRCODE = '22023';
    END IF;
    IF delay_seconds IS NULL OR delay_seconds < 0 OR delay_seconds = 'NaN' OR delay_seconds = 'Infinity' THEN
        RAISE EXCEPTION 'kit.enqueue: delay_seconds must be a finite number >= 0' USING ERRCODE = '22023';
    END IF;
    IF wid !~ '^[!-~]{{1,200}}$' THEN
        RAISE EXCEPTION 'kit.enqueue: workflow_id must be 1-200 printable ASCII characters without spaces'
            USING ERRCODE = '22023';
    END IF;
    IF (enqueue.dedup_id IS NOT NULL AND length(enqueue.dedup_id) NOT BETWEEN 1 AND 200)
       OR (enqueue.partition_key IS NOT NULL AND length(enqueue.partition_key) NOT BETWEEN 1 AND 200) THEN
        RAISE EXCEPTION 'kit.enqueue: dedup_id and partition_key must be 1-200 characters' USING ERRCODE = '22023';
    END IF;
    IF args::text LIKE '%"\_\_kit\_\_"%' OR kwargs::text LIKE '%"\_\_kit\_\_"%' THEN
        RAISE EXCEPTION 'kit.enqueue: arguments are plain JSON; the "__kit__" key is reserved' USING ERRCODE = '22023';
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
        IF NOT spec.partitioned AND enqueue.partition_key IS NOT NULL THEN
            RAISE EXCEPTION 'kit.enqueue: queue % is not partitioned: partition_key is not accepted', enqueue.queue
                USING ERRCODE = '22023';
        END IF;
        IF NOT spec.priority AND coalesce(enqueue.priority, 0) <> 0 THEN
            RAISE EXCEPTION 'kit.enqueue: queue % was declared without priority', enqueue.queue
                USING ERRCODE = '22023';
        END IF;
    ELSIF enqueue.partition_key IS NOT NULL THEN
        RAISE EXCEPTION 'kit.enqueue: the default queue is not partitioned' USING ERRCODE = '22023';
    END IF;
    IF enqueue.dedup_id IS NOT NULL THEN
        SELECT w.workflow_id INTO holder FROM {schema}.workflows w
         WHERE coalesce(w.queue, '') = coalesce(enqueue.queue, '') AND w.dedup_id = enqueue.dedup_id
           AND w.status IN ('PENDING', 'RUNNING');
        IF FOUND THEN
            RAISE EXCEPTION 'kit.enqueue: queue % already has a live workflow % with dedup id %',
                coalesce(enqueue.queue, 'default'), holder, enqueue.dedup_id USING ERRCODE = '23505';
        END IF;
    END IF;
    INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, dedup_id, run_at,
                                    partition_key)
    VALUES (wid, workflow_name, 'PENDING', jsonb_build_object('args', args, 'kwargs', kwargs)::text,
            enqueue.queue, coalesce(enqueue.priority, 0), enqueue.dedup_id,
            CASE WHEN delay_seconds > 0 THEN now() + make_interval(secs => delay_seconds) END,
            enqueue.partition_key)
    ON CONFLICT ON CONSTRAINT workflows_pkey DO NOTHING;
    IF NOT FOUND THEN  -- the id exists: same workflow → idempotent; another workflow → an error
        SELECT w.name INTO existing FROM {schema}.workflows w WHERE w.workflow_id = wid;
        IF existing IS DISTINCT FROM workflow_name THEN
            RAISE EXCEPTION 'kit.enqueue: workflow id % already belongs to workflow %', wid, existing
                USING ERRCODE = '22023';
        END IF;
        RETURN wid;
    END IF;
    -- The schema name is a validated identifier; strip the quotes the migration formatter adds.
    PERFORM pg_notify(replace('{schema}', '"', '') || '_wake', 'q:' || coalesce(enqueue.queue, ''));
    RETURN wid;
END
$$;
