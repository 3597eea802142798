-- kit schema v8: workflow lifecycle: deadlines, cancellation, resume, fork lineage and retention.
-- deadline_at: the instant (application clock) past which the workflow is cancelled at its next step
-- boundary; children inherit the earlier of their own and their parent's. forked_from: the workflow whose
-- checkpoints a fork copied.
ALTER TABLE {schema}.workflows
    ADD COLUMN deadline_at timestamptz,
    ADD COLUMN forked_from text;

-- Retention (kit gc) finds old finished workflows by workflows_finished_idx and deletes their steps,
-- messages, events and streams through those tables' primary keys (all lead with workflow_id).

-- Pending work per application version (kit workflows list --version, stranded-work warnings).
CREATE INDEX workflows_version_active_idx ON {schema}.workflows (app_version, status)
    WHERE status IN ('PENDING', 'RUNNING');
