"""kit's modules import one way, down the layers, with no cycle: read from the source with ``ast``.

Every import counts: module level, inside functions, and under ``if TYPE_CHECKING``. Layers, lowest
first: base (errors, clock, config, serialization, the telemetry hook, ...) < storage (the interface,
the backends, the notifier, the bench's probe protocol) < engine (definitions, engine) < runtime (worker
runtime, services) < features (lifecycle, handle, queues, messaging, streams, schedules, starting, the
SQLAlchemy adapter) < facade (``kit``, ``kit.app``, ``kit.client``) < tools (CLI, bench, lab, monitor,
demo, testing, the OpenTelemetry and Prometheus integrations, ``python -m kit``). A module may import its
own layer or lower ones; within a layer the cycle check keeps the order.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Ordered lowest first; a module belongs to the layer of its longest matching name (a package name
# covers its submodules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("kit.errors", "kit.clock", "kit.config", "kit.validation", "kit.serialization", "kit.cron",
              "kit.groupcommit", "kit.embedded", "kit.telemetry", "kit.integrations")),
    ("storage", ("kit.storage", "kit.registry", "kit.notifier", "kit.backends",
                 "kit.bench.probe")),  # the protocol a backend's bench probe implements
    ("engine", ("kit.definitions", "kit.engine")),
    ("runtime", ("kit.runtime", "kit.services")),
    ("features", ("kit.lifecycle", "kit.handle", "kit.queues", "kit.messaging", "kit.streams", "kit.schedules",
                  "kit.starting", "kit.integrations.sqlalchemy")),
    ("facade", ("kit", "kit.app", "kit.client")),
    ("tools", ("kit.cli", "kit.bench", "kit.lab", "kit.monitor", "kit.demo", "kit.demo_app", "kit.testing",
               "kit.integrations.otel", "kit.integrations.prometheus", "kit.integrations.metrics", "kit.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# Imports of a backend by name from outside kit.backends, each with the change that removes it. An entry
# that no longer matches an import fails the test, so the list only shrinks.
BACKEND_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


def _module_files() -> dict[str, Path]:
    """Module name -> source file, for kit/ and backends/ (installed as kit.backends)."""
    found: dict[str, Path] = {}
    for root, prefix in ((REPO / "kit", "kit"), (REPO / "backends", "kit.backends")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _module_files()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str) -> str | None:
    """The kit module an import of ``name`` loads: ``name`` itself, else its nearest kit parent."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    """Every kit module that ``module`` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module).split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from kit.x import y` loads kit.x.y when that is a module, else kit.x (y is an attribute).
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "kit" or target.startswith("kit."):
                resolved = _resolve(target)
                if resolved is not None and resolved != module:
                    out.add(resolved)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} has no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_cycle():
    """Depth-first search over the whole graph; a back edge is a cycle, reported as its modules."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    upward = [f"{m} ({layer_of(m)}) imports {n} ({layer_of(n)})"
              for m, targets in sorted(GRAPH.items()) for n in sorted(targets)
              if RANK[layer_of(n)] > RANK[layer_of(m)]]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_kit_module_imports_a_backend_by_name():
    found = {(m, n) for m, targets in GRAPH.items() if not m.startswith("kit.backends")
             for n in targets if n.startswith("kit.backends")}
    unexpected = found - set(BACKEND_IMPORTS_ALLOWED)
    assert not unexpected, f"kit modules importing a backend by name: {sorted(unexpected)}"
    gone = set(BACKEND_IMPORTS_ALLOWED) - found
    assert not gone, f"no longer imported, remove from BACKEND_IMPORTS_ALLOWED: {sorted(gone)}"


# Modules outside kit.backends that talk to a database driver themselves, with why.
DRIVER_IMPORTS_ALLOWED = {
    "kit.lab.controller": "the HA lab is a Patroni (PostgreSQL) cluster: it asks a node whether it takes writes",
    "kit.lab.citus": "the Citus lab is a Patroni cluster too: it reads pg_dist_node and probes each group",
}


def test_no_driver_import_outside_the_backends():
    """The engine, features and tools reach databases only through backends (the bench through its probe)."""
    drivers = ("psycopg", "psycopg_pool")
    offenders = []
    for module, path in sorted(MODULES.items()):
        if module.startswith("kit.backends") or module in DRIVER_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in drivers]
    assert not offenders, "database drivers imported outside kit.backends:\n" + "\n".join(offenders)


def test_the_checker_sees_function_local_and_type_checking_imports():
    """The reader itself: a module with only a function-local import and a TYPE_CHECKING import has both."""
    assert "kit.bench.app" in GRAPH["kit.bench"]  # imported inside __getattr__
    assert "kit.app" in GRAPH["kit.bench"]  # imported under TYPE_CHECKING


# Modules over the size limit, each with the change that splits it. An entry that no longer applies fails
# the test, so the list only shrinks.
LONG_MODULES_ALLOWED: dict[str, str] = {}
MAX_LINES = 600


def test_no_module_over_600_lines():
    """Modules of a few hundred lines: a longer one is split by what its parts do."""
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    long = {m: n for m, n in sizes.items() if n > MAX_LINES}
    unexpected = [f"{m}: {n} lines" for m, n in sorted(long.items()) if m not in LONG_MODULES_ALLOWED]
    assert not unexpected, f"modules over {MAX_LINES} lines: " + ", ".join(unexpected)
    stale = sorted(set(LONG_MODULES_ALLOWED) - set(long))
    assert not stale, f"no longer over {MAX_LINES} lines, remove from LONG_MODULES_ALLOWED: {stale}"
