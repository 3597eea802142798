-- kit schema v8: workflow lifecycle: deadlines, cancellation, resume, fork lineage and retention.
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
ALTER TABLE {schema}.workflows ADD COLUMN IF NOT EXISTS forked_from text;
CREATE INDEX IF NOT EXISTS workflows_version_active_idx ON {schema}.workflows (app_version, status)
    WHERE status IN ('PENDING', 'RUNNING');
