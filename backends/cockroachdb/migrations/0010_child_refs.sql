-- kit schema v10: retention keeps every workflow a kept workflow may still re-attach to.
CREATE INDEX IF NOT EXISTS steps_child_ref_idx ON {schema}.steps (output)
    WHERE name LIKE 'start:%' OR name LIKE 'enqueue:%';
