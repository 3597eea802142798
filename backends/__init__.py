"""Storage backends shipped with kit; third parties register theirs under the entry point group
``kit.backends``."""
