"""Which recorded application versions a worker replays, and a warning about work none of them will."""

from __future__ import annotations

import logging

from kit.config import Config
from kit.storage import Backend

log = logging.getLogger("kit.lifecycle")


def accepted_versions(app_version: str | None, compatible: str | None) -> list[str] | None:
    """Which recorded app versions a worker replays: None (all) for an unversioned app, else its own
    version plus the declared compatible ones ('*' accepts all). Unversioned work is always accepted."""
    if app_version is None:
        return None
    extra = [v.strip() for v in (compatible or "").split(",") if v.strip()]
    if "*" in extra:
        return None
    return [app_version, *[v for v in extra if v != app_version]]


def warn_stranded(backend: Backend, config: Config) -> dict[str, int]:
    """Log (and return) unfinished work of versions this worker will not replay: after a deploy, that
    work waits for a worker of its version or for ``compatible_versions`` to include it."""
    versions = accepted_versions(config.app_version, config.compatible_versions)
    if versions is None:
        return {}
    counts = backend.workflow_version_counts()
    stranded = {v: n for v, n in counts.items() if v is not None and v not in versions}
    if stranded:
        listing = ", ".join(f"{v!r}: {n}" for v, n in sorted(stranded.items()))
        log.warning("unfinished workflows of other application versions wait for a compatible worker (%s); "
                    "this worker (app_version %r) replays %s. Keep a worker of those versions running, or "
                    "declare them in compatible_versions once this code can replay them (docs/lifecycle.md)",
                    listing, config.app_version, ", ".join(repr(v) for v in versions))
    return stranded
