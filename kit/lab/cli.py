"""``kit lab``: bring the HA chaos lab up and down by hand and inject faults (see docs/lab.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from kit.config import redact_url
from kit.errors import KitError, UsageError
from kit.lab.cockroach import FAULTS as COCKROACH_FAULTS
from kit.lab.cockroach import CockroachLab
from kit.lab.controller import FAULTS, Lab
from kit.lab.host import LabError, LabUnavailable, engine_problem

FAULT_NAMES = tuple(FAULTS)


def add_lab_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``kit lab up|down|status|fault NAME`` (the lab has no database options: ``common`` unused)."""
    del common
    lab = sub.add_parser("lab", help="the HA chaos lab: Patroni cluster with toxiproxy (docs/lab.md)")
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lsub.required = True
    p = lsub.add_parser("up", help="build what is missing, start etcd + 3 PostgreSQL/Patroni nodes + toxiproxy "
                                   "(--cluster cockroachdb: 3 CockroachDB nodes from a local image)")
    p.add_argument("--variant", choices=("async", "sync"), default="async",
                   help="replication: asynchronous (default) or Patroni synchronous_mode")
    _cluster_option(p)
    _compose_option(p)
    p.set_defaults(handler=cmd_lab_up)
    p = lsub.add_parser("down", help="remove the lab's containers, network and data (images stay cached)")
    _cluster_option(p)
    _compose_option(p)
    p.set_defaults(handler=cmd_lab_down)
    p = lsub.add_parser("status", help="containers, Patroni members and roles, proxies and toxics")
    p.add_argument("--json", action="store_true", help="print JSON")
    _cluster_option(p)
    p.set_defaults(handler=cmd_lab_status)
    names = FAULT_NAMES + tuple(n for n in COCKROACH_FAULTS if n not in FAULT_NAMES)
    p = lsub.add_parser("fault", help="inject a fault: " + ", ".join(FAULT_NAMES)
                        + "; with --cluster cockroachdb: " + ", ".join(COCKROACH_FAULTS))
    p.add_argument("name", metavar="NAME", choices=names, help="one of: " + ", ".join(names))
    _cluster_option(p)
    p.set_defaults(handler=cmd_lab_fault)


def _cluster_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", choices=("postgres-ha", "cockroachdb"), default="postgres-ha",
                   help="which lab: the Patroni PostgreSQL cluster (default) or a 3-node CockroachDB cluster "
                        "(compose/cockroachdb; needs the official image present locally: kit never pulls it)")


def _compose_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compose-dir", metavar="DIR",
                   help="the lab's compose directory (default: $KIT_LAB_COMPOSE_DIR, else compose/postgres-ha "
                        "of the kit checkout or of the current directory)")


def _lab(variant: str | None = None, compose_dir: str | None = None, *, needs_compose: bool = False) -> Lab:
    """A controller for the lab, or a one-line UsageError when the lab can't run here (no Docker engine;
    for ``up``/``down``, no compose files: an installed kit without a checkout)."""
    lab = Lab(variant or "async", compose_dir=compose_dir)
    if needs_compose:
        try:
            lab.compose_dir  # noqa: B018 - found before anything starts, or one line saying where to look
        except LabUnavailable as exc:
            raise UsageError(f"chaos lab unavailable: {exc}") from None
    problem = engine_problem()
    if problem:
        raise UsageError(f"chaos lab unavailable: {problem}")
    if variant is None:
        # Keep the running cluster's replication mode.
        try:
            if lab.status().get("synchronous_mode"):
                lab.variant = "sync"
        except Exception:  # noqa: BLE001 - a stopped cluster has no mode to keep
            pass
    return lab


def _errors(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except LabUnavailable as exc:
        raise UsageError(f"chaos lab unavailable: {exc}") from None
    except LabError as exc:
        raise KitError(str(exc)) from None


def _cockroach_lab(compose_dir: str | None = None, *, needs_compose: bool = False) -> CockroachLab:
    """The CockroachDB lab's controller, or a one-line UsageError when it can't run here."""
    lab = CockroachLab(compose_dir=compose_dir)
    if needs_compose:
        try:
            lab.compose_dir  # noqa: B018 - found before anything starts
        except LabUnavailable as exc:
            raise UsageError(f"CockroachDB lab unavailable: {exc}") from None
    problem = lab.image_problem() if needs_compose else engine_problem()
    if problem:
        raise UsageError(f"CockroachDB lab unavailable: {problem}")
    return lab


def _cockroach(args: argparse.Namespace) -> int:
    """``kit lab up|down|status|fault --cluster cockroachdb``."""
    command = args.lab_command
    lab = _cockroach_lab(getattr(args, "compose_dir", None), needs_compose=command in ("up", "down"))

    def run() -> int:
        if command == "up":
            if lab.is_up():
                lab.heal()
            else:
                lab.up()
            print(f"lab up (cockroachdb, image {lab.status()['image']})")
            print(f"workers' URL: {lab.database_url()}  (insecure cluster; kit detects the cockroachdb backend)")
            return 0
        if command == "down":
            lab.down()
            print("lab down (cockroachdb)")
            return 0
        if command == "status":
            st = lab.status()
            if args.json:
                print(json.dumps(st, indent=2, default=str))
            else:
                print(f"project {st['project']}  image {st['image']}")
                for name, state in st["containers"].items():
                    print(f"  container {name:8} {state}")
                print(f"  answering SQL: {', '.join(st['answering']) or 'none'}")
                print(f"  workers' URL {st['database_url']}")
            return 0 if st["answering"] else 1
        if args.name not in COCKROACH_FAULTS:
            raise UsageError(f"fault {args.name!r} is not one of the CockroachDB lab's: {', '.join(COCKROACH_FAULTS)}")
        if not lab.is_up():
            raise UsageError("the CockroachDB lab is not running: `kit lab up --cluster cockroachdb` first")
        print(lab.fault(args.name))
        return 0

    return _errors(run)


def cmd_lab_up(args: argparse.Namespace) -> int:
    """Start the cluster (or reuse it) and print the primary and the workers' URL (password hidden)."""
    if args.cluster == "cockroachdb":
        return _cockroach(args)
    lab = _lab(args.variant, args.compose_dir, needs_compose=True)

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
    if args.cluster == "cockroachdb":
        return _cockroach(args)
    lab = _lab("async", args.compose_dir, needs_compose=True)

    def run() -> int:
        lab.down()
        print("lab down")
        return 0

    return _errors(run)


def cmd_lab_status(args: argparse.Namespace) -> int:
    """Print the cluster's state (exit 1 when it is not running)."""
    if args.cluster == "cockroachdb":
        return _cockroach(args)
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
    if args.cluster == "cockroachdb":
        return _cockroach(args)
    if args.name not in FAULTS:
        raise UsageError(f"fault {args.name!r} is one of the CockroachDB lab's: add --cluster cockroachdb")
    lab = _lab()

    def run() -> int:
        if not lab.is_up():
            raise UsageError("the lab is not running: `kit lab up` first")
        print(lab.fault(args.name))
        return 0

    return _errors(run)
