"""The HA chaos lab: cluster controller, workload, invariant checker and reports (see docs/lab.md)."""
