-- kit schema v10: retention keeps every workflow a kept workflow may still re-attach to.
-- A child's id is the output of the step that started it ('start:<name>' or 'enqueue:<name>'), in its
-- parent and in every fork that copied that step. kit gc deletes a workflow only when no remaining
-- workflow's steps refer to it; this partial index answers that question per candidate.
CREATE INDEX steps_child_ref_idx ON {schema}.steps (output)
    WHERE name LIKE 'start:%' OR name LIKE 'enqueue:%';
