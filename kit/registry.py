"""Backend selection: which installed backend serves a configuration.

A backend is a :class:`~kit.storage.Backend` subclass registered under the entry-point group
``kit.backends`` (``[project.entry-points."kit.backends"] name = "pkg.module:Class"``). It declares the
URL schemes it accepts (``url_schemes``), how to describe a server (``probe``), whether a described server
is its own (``detect``) and a ``specificity``. Choosing one:

* ``backend = "name"`` picks that backend; its :meth:`~kit.storage.Backend.open` then refuses a server it
  does not :meth:`~kit.storage.Backend.detect` with a one-line ConfigError saying what was found.
* otherwise the URL's scheme decides; when several installed backends claim the scheme (``postgresql://``
  is claimed by plain PostgreSQL and by refinements of it such as Citus), the server is probed once and
  the most specific backend that detects it wins. An unclaimed scheme is an error listing the installed
  schemes.
* no URL: the embedded default (:mod:`kit.embedded`) is started and its URL resolved like any other.

Core names no backend: installed backends come from the entry points, from the packages inside
``kit.backends`` (each exposes its class as ``BACKEND``; this covers a source tree without installed
metadata), and from :func:`register` (in-process, for tests and applications that ship a backend
without packaging metadata).
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager

from kit.config import Config, check_url, redact_url
from kit.errors import ConfigError
from kit.storage import Backend, ServerInfo

log = logging.getLogger("kit.registry")

GROUP = "kit.backends"
_registered: dict[str, type[Backend]] = {}  # in-process registrations (register()); they win over the rest


@functools.lru_cache(maxsize=1)
def _discovered() -> tuple[dict[str, type[Backend]], tuple[str, ...]]:
    """Entry points of the group, then backend packages inside ``kit.backends`` (each exposing ``BACKEND``);
    the first of a name wins. Returns the classes and one line per backend that failed to load."""
    from importlib.metadata import entry_points

    found: dict[str, type[Backend]] = {}
    broken: list[str] = []
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            continue
        try:
            found[ep.name] = _checked(ep.load(), f"entry point {ep.name} = {ep.value}")
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            broken.append(f"{ep.name} ({type(exc).__name__}: {exc})")
    try:
        package = importlib.import_module(GROUP)
        modules = [m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg]
    except ImportError:
        modules = []
    for module in modules:
        try:
            cls = getattr(importlib.import_module(f"{GROUP}.{module}"), "BACKEND", None)
            if cls is not None:
                cls = _checked(cls, f"{GROUP}.{module}.BACKEND")
                found.setdefault(cls.name, cls)
        except Exception as exc:  # noqa: BLE001
            broken.append(f"{GROUP}.{module} ({type(exc).__name__}: {exc})")
    return found, tuple(broken)


def _checked(obj: object, where: str) -> type[Backend]:
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise TypeError(f"{where} is not a kit.storage.Backend subclass")
    if not obj.url_schemes:
        raise TypeError(f"{where} declares no url_schemes")
    return obj


def installed() -> dict[str, type[Backend]]:
    """Every installed backend by name (in-process registrations, entry points, in-tree packages)."""
    found = dict(_discovered()[0])
    found.update(_registered)
    return found


def _broken_note() -> str:
    broken = _discovered()[1]
    return f" (failed to load: {'; '.join(broken)})" if broken else ""


def installed_schemes() -> dict[str, list[str]]:
    """URL scheme -> names of the installed backends that accept it."""
    out: dict[str, list[str]] = {}
    for name, cls in sorted(installed().items()):
        for scheme in cls.url_schemes:
            out.setdefault(scheme.lower(), []).append(name)
    return dict(sorted(out.items()))


@contextmanager
def register(cls: type[Backend]) -> Iterator[type[Backend]]:
    """Make ``cls`` an installed backend inside the ``with`` block (tests; applications that ship a backend
    without packaging metadata). It wins over an installed backend of the same name."""
    _checked(cls, repr(cls))
    previous = _registered.get(cls.name)
    _registered[cls.name] = cls
    try:
        yield cls
    finally:
        if previous is None:
            _registered.pop(cls.name, None)
        else:
            _registered[cls.name] = previous


def backend_class(name: str) -> type[Backend]:
    """The installed backend called ``name``; ConfigError naming the installed ones otherwise."""
    found = installed()
    if name in found:
        return found[name]
    raise ConfigError(f"unknown backend '{name}'; installed backends: {', '.join(sorted(found)) or 'none'}"
                      + _broken_note())


def _scheme_list() -> str:
    return ", ".join(f"{s}:// ({', '.join(names)})" for s, names in installed_schemes().items()) or "none"


def describe_server(info: ServerInfo) -> str:
    """A short description of a probed server for error messages: its version and extensions."""
    version = info.version.strip()
    for cut in (" on ", " (", ","):
        if cut in version:
            version = version.split(cut, 1)[0]
    extensions = [f"{k} {v}" for k, v in sorted(info.extensions.items()) if k != "plpgsql"]
    return version + (f" with extension{'s' if len(extensions) > 1 else ''} {', '.join(extensions)}"
                      if extensions else "")


def resolve(url: str, backend: str | None = None, *, connect_timeout: float = 5.0,
            probe: bool = True) -> type[Backend]:
    """The backend class for ``url`` (and an explicit ``backend`` name, if given).

    The server is probed only when several installed backends claim the URL's scheme; ``probe=False``
    then picks the least specific of them (the plain server of that scheme) without connecting.
    """
    scheme = check_url(url)
    if backend is not None:
        cls = backend_class(backend)
        if scheme not in (s.lower() for s in cls.url_schemes):
            raise ConfigError(f"backend '{backend}' does not take {scheme}:// URLs; it takes "
                              f"{', '.join(s + '://' for s in cls.url_schemes)}")
        return cls
    candidates = sorted((c for c in installed().values() if scheme in (s.lower() for s in c.url_schemes)),
                        key=lambda c: (-c.specificity, c.name))
    if not candidates:
        raise ConfigError(f"no installed backend takes {scheme}:// URLs; installed schemes: {_scheme_list()}"
                          + _broken_note())
    if len(candidates) == 1:
        return candidates[0]
    if not probe:
        return candidates[-1]
    infos: dict[object, ServerInfo] = {}
    info: ServerInfo | None = None
    for cls in candidates:  # most specific first; one probe per distinct probe implementation
        key = getattr(cls.probe, "__func__", cls.probe)
        if key not in infos:
            try:
                infos[key] = cls.probe(url, connect_timeout=connect_timeout)
            except NotImplementedError:
                raise ConfigError(f"several installed backends take {scheme}:// URLs "
                                  f"({', '.join(c.name for c in candidates)}) and backend '{cls.name}' cannot "
                                  "probe the server to choose: set backend") from None
        info = infos[key]
        if cls.detect(info):
            log.debug("%s:// server detected as backend '%s'", scheme, cls.name)
            return cls
    assert info is not None
    raise ConfigError(f"the server at {redact_url(url)} is {describe_server(info)}, and none of the backends "
                      f"for {scheme}:// URLs ({', '.join(c.name for c in candidates)}) serves it")


def server_mismatch(cls: type[Backend], info: ServerInfo, url: str) -> ConfigError:
    """The one-line error a backend's ``open()`` raises when :meth:`~kit.storage.Backend.detect` refuses
    its server: what was found and which backend to set instead."""
    others = sorted((c for c in installed().values() if c is not cls and c.detect(info)),
                    key=lambda c: (-c.specificity, c.name))
    fix = (f"set backend='{others[0].name}' (or leave backend unset)" if others
           else f"no installed backend serves it (installed: {', '.join(sorted(installed()))})")
    return ConfigError(f"backend '{cls.name}' cannot serve the server at {redact_url(url)}: it is "
                       f"{describe_server(info)}; {fix}")


def load_backend(cfg: Config, *, start_embedded: bool = True) -> Backend:
    """Build (not open) the configured backend. Without a ``database_url`` the embedded default is started
    (``start_embedded=False``: its backend is built without starting it, e.g. to print DDL)."""
    from kit import embedded

    url = cfg.database_url
    if url is None:
        if cfg.backend is not None:
            backend_class(cfg.backend)  # an unknown name fails before a server is started
        url = embedded.embedded_url(cfg.data_dir) if start_embedded else embedded.OFFLINE_URL
    cls = resolve(url, cfg.backend, connect_timeout=cfg.connect_timeout,
                  probe=start_embedded or cfg.database_url is not None)
    return cls(url, schema=cfg.schema, pool_size=cfg.effective_pool_size, connect_timeout=cfg.connect_timeout,
               retry_seconds=cfg.db_retry_seconds, notify=cfg.notify, call_timeout=cfg.call_timeout)
