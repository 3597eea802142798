-- kit schema v14 (Citus): enqueue() from plain SQL, as in v6, for the distributed layout: the workflow row,
-- its ready row (on its lane) and its dedup row in the calling transaction (one shard, or a two-phase
-- commit when they live on different nodes), and the wake-up sent by this coordinator session at commit.
-- requires: sql_enqueue_function

CREATE OR REPLACE FUNCTION {schema}.enqueue(
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
    created  timestamptz := now();
    ready_at timestamptz;
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
    SELECT w.name INTO existing FROM {schema}.workflows w WHERE w.workflow_id = wid;
    IF FOUND THEN  -- the id exists: same workflow → idempotent; another workflow → an error
        IF existing IS DISTINCT FROM workflow_name THEN
            RAISE EXCEPTION 'kit.enqueue: workflow id % already belongs to workflow %', wid, existing
                USING ERRCODE = '22023';
        END IF;
        RETURN wid;
    END IF;
    ready_at := CASE WHEN delay_seconds > 0 THEN created + make_interval(secs => delay_seconds) END;
    BEGIN  -- a subtransaction: a unique violation below writes nothing
        INSERT INTO {schema}.workflows (workflow_id, name, status, inputs, queue, priority, dedup_id, run_at,
                                        partition_key, created_at)
        VALUES (wid, workflow_name, 'PENDING', jsonb_build_object('args', args, 'kwargs', kwargs)::text,
                enqueue.queue, coalesce(enqueue.priority, 0), enqueue.dedup_id, ready_at, enqueue.partition_key,
                created);
        IF enqueue.dedup_id IS NOT NULL THEN
            INSERT INTO {schema}.dedup (dkey, workflow_id)
            VALUES ({schema}.dedup_key(enqueue.queue, enqueue.dedup_id), wid);
        END IF;
    EXCEPTION WHEN unique_violation THEN
        SELECT w.name INTO existing FROM {schema}.workflows w WHERE w.workflow_id = wid;
        IF FOUND THEN  -- created concurrently: same workflow → idempotent; another workflow → an error
            IF existing IS DISTINCT FROM workflow_name THEN
                RAISE EXCEPTION 'kit.enqueue: workflow id % already belongs to workflow %', wid, existing
                    USING ERRCODE = '22023';
            END IF;
            RETURN wid;
        END IF;
        SELECT d.workflow_id INTO holder FROM {schema}.dedup d
         WHERE d.dkey = {schema}.dedup_key(enqueue.queue, enqueue.dedup_id);
        RAISE EXCEPTION 'kit.enqueue: queue % already has a live workflow % with dedup id %',
            coalesce(enqueue.queue, 'default'), holder, enqueue.dedup_id USING ERRCODE = '23505';
    END;
    INSERT INTO {schema}.ready (lane_key, workflow_id, name, queue, priority, app_version, partition_key, run_at,
                                created_at)
    VALUES ({schema}.ready_lane(wid, enqueue.queue), wid, workflow_name, enqueue.queue,
            coalesce(enqueue.priority, 0), NULL, enqueue.partition_key, ready_at, created);
    -- The schema name is a validated identifier; strip the quotes the migration formatter adds.
    PERFORM pg_notify(replace('{schema}', '"', '') || '_wake', 'q:' || coalesce(enqueue.queue, ''));
    RETURN wid;
END
$$;
