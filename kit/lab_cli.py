"""``kit lab``: bring the HA chaos lab up and down by hand and inject faults (see docs/lab.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from kit.errors import KitError, UsageError

# Kept here (not imported from chaos.lab) so `kit lab fault --help` and bad names work without the lab's deps.
FAULT_NAMES = ("kill-primary", "pause-primary", "partition-primary", "partition-victim", "timeout-victim",
               "latency", "reset-peer", "limit-data", "restart-cluster", "restart-primary", "heal")


def add_lab_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``kit lab up|down|status|fault NAME`` (the lab has no database options: ``common`` unused)."""
    del common
    lab = sub.add_parser("lab", help="the HA chaos lab: Patroni cluster with toxiproxy (docs/lab.md)")
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lsub.required = True
    p = lsub.add_parser("up", help="build what is missing, start etcd + 3 PostgreSQL/Patroni nodes + toxiproxy")
    p.add_argument("--variant", choices=("async", "sync"), default="async",
                   help="replication: asynchronous (default) or Patroni synchronous_mode")
    p.set_defaults(handler=cmd_lab_up)
    p = lsub.add_parser("down", help="remove the lab's containers, network and data (images stay cached)")
    p.set_defaults(handler=cmd_lab_down)
    p = lsub.add_parser("status", help="containers, Patroni members and roles, proxies and toxics")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_lab_status)
    p = lsub.add_parser("fault", help="inject a fault: " + ", ".join(FAULT_NAMES))
    p.add_argument("name", metavar="NAME", choices=FAULT_NAMES, help="one of: " + ", ".join(FAULT_NAMES))
    p.set_defaults(handler=cmd_lab_fault)


def _lab(variant: str | None = None) -> Any:
    """A controller for the lab, or a one-line UsageError when the lab can't run here."""
    try:
        from chaos.lab import Lab, engine_problem
    except ImportError as exc:
        raise UsageError(f"the chaos lab is not importable ({exc}); run kit from a checkout of the "
                         "repository with `pip install -e '.[lab]'`") from None
    problem = engine_problem()
    if problem:
        raise UsageError(f"chaos lab unavailable: {problem}")
    lab = Lab(variant or "async")
    if variant is None:
        # Keep the running cluster's replication mode.
        try:
            if lab.status().get("synchronous_mode"):
                lab.variant = "sync"
        except Exception:  # noqa: BLE001 - a stopped cluster has no mode to keep
            pass
    return lab


def _errors(fn: Callable[[], int]) -> int:
    from chaos.lab import LabError, LabUnavailable

    try:
        return fn()
    except LabUnavailable as exc:
        raise UsageError(f"chaos lab unavailable: {exc}") from None
    except LabError as exc:
        raise KitError(str(exc)) from None


def cmd_lab_up(args: argparse.Namespace) -> int:
    """Start the cluster (or reuse it) and print the primary and the workers' URL (password hidden)."""
    from kit.config import redact_url

    lab = _lab(args.variant)

    def run() -> int:
        if lab.is_up():
            lab.heal()
            lab.set_variant(args.variant)
        else:
            lab.up()
        print(f"lab up ({lab.variant}): primary {lab.primary()}")
        print(f"workers' URL: {redact_url(lab.database_url())}")
        print("password: $KIT_LAB_PG_PASSWORD (default 'kitlab'); watch it with `kit monitor --database-url ...`")
        return 0

    return _errors(run)


def cmd_lab_down(args: argparse.Namespace) -> int:
    """Remove the cluster."""
    lab = _lab("async")

    def run() -> int:
        lab.down()
        print("lab down")
        return 0

    return _errors(run)


def cmd_lab_status(args: argparse.Namespace) -> int:
    """Print the cluster's state (exit 1 when it is not running)."""
    lab = _lab()

    def run() -> int:
        st = lab.status()
        if args.json:
            print(json.dumps(st, indent=2, default=str))
        else:
            print(f"project {st['project']}  synchronous_mode {st['synchronous_mode']}  primary {st['primary']}")
            for name, state in st["containers"].items():
                print(f"  container {name:10} {state}")
            for m in st["members"]:
                lag = "" if m["lag"] is None else f" lag {m['lag']} B"
                print(f"  member    {m['name']:10} {m['role']:12} {m['state']:10} timeline {m['timeline']}{lag}")
            proxies = st["proxies"]
            if isinstance(proxies, dict):
                for name, p in proxies.items():
                    toxics = ", ".join(p["toxics"]) or "no toxics"
                    print(f"  proxy     {name:10} {'enabled' if p['enabled'] else 'DISABLED':10} {toxics}")
            else:
                print(f"  {proxies}")
            print(f"  workers' URL {st['database_url']}")
        return 0 if st["containers"] and st["primary"] else 1

    return _errors(run)


def cmd_lab_fault(args: argparse.Namespace) -> int:
    """Inject one fault by name."""
    lab = _lab()

    def run() -> int:
        if not lab.is_up():
            raise UsageError("the lab is not running: `kit lab up` first")
        print(lab.fault(args.name))
        return 0

    return _errors(run)
