"""Kit applications used by multi-process tests (run as worker subprocesses)."""
