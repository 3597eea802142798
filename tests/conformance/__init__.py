"""Backend conformance suite (River style): one set of tests every storage backend must pass.

A backend's adapter module provides a ``backend_factory`` fixture (see :mod:`.helpers` for its contract)
and imports the tests::

    from conformance import *  # noqa: F401,F403

Areas: :mod:`.lifecycle` (open/close, migrations, describe, capabilities), :mod:`.workflows` (create,
get, list, finish, release, wait), :mod:`.leases` (claims, lease renewal, heartbeats), :mod:`.steps`
(fenced checkpoints, transactional steps), :mod:`.notifications` (wake-ups), :mod:`.messaging`
(messages and events), :mod:`.streams` (streams; listings of messages, events, streams), :mod:`.control`
(cancel, resume, fork, retention, version filters, deadlines).
"""

from __future__ import annotations

from . import control, leases, lifecycle, messaging, notifications, steps, streams, workflows

__all__: list[str] = []

for _module in (lifecycle, workflows, leases, steps, notifications, messaging, streams, control):
    for _name in dir(_module):
        if _name.startswith("test_"):
            if _name in globals():
                raise RuntimeError(f"conformance test {_name} is defined twice")
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)

# Fixtures the suite defines for itself (the adapter must import them along with the tests).
listing = workflows.listing
__all__.append("listing")
