"""Optional integrations with the Python ecosystem, each behind an extra of the package.

* :mod:`kit.integrations.sqlalchemy` (``[sqlalchemy]``): SQLAlchemy sessions in transactional steps,
  enqueues that join a SQLAlchemy transaction.
* :mod:`kit.integrations.otel` (``[otel]``): OpenTelemetry spans per workflow run and step, metrics.
* :mod:`kit.integrations.prometheus` (``[prometheus]``): the same metrics, and the monitor's numbers,
  on an HTTP endpoint for Prometheus (``kit worker --metrics-port``).

Importing one whose extra is missing raises :class:`~kit.errors.ConfigError` saying what to install.
See docs/integrations.md.
"""

from __future__ import annotations

from kit.errors import ConfigError


def is_sqlalchemy(obj: object) -> bool:
    """True for instances of SQLAlchemy classes (and their subclasses), without importing SQLAlchemy."""
    return any(c.__module__.startswith("sqlalchemy.") for c in type(obj).__mro__)


def missing_extra(extra: str, what: str) -> ConfigError:
    """The error for an integration whose package is not installed."""
    return ConfigError(f"{what} is not installed: pip install 'durable-kit[{extra}]'")
