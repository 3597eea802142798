"""``kit bench`` options: the workloads, their default sizes, the targets, and validated parameters."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kit.errors import UsageError

WORKLOADS = ("seq", "par", "queue-drain", "recovery")
LATENCY_SAMPLES = 200
CHOICES = (*WORKLOADS, "all")
DEFAULT_SCHEMA = "kit_bench"
JSON_VERSION = 1

# Defaults per workload: (workflows, steps per workflow).
SIZES = {"seq": (200, 10), "par": (200, 10), "queue-drain": (2000, 1), "recovery": (16, 6)}
DEFAULT_CONCURRENCY = 16
DEFAULT_WORKERS = 1
DEFAULT_LEASE = 2.0
DEFAULT_STEP_SECONDS = 0.25
DEFAULT_FLOOR_ITERATIONS = 2000

# BRIEF.md section 5: targets, and the peer's published figures on its reference machine.
TARGET_FLOOR_RATIO = 1.3
TARGET_DRAIN_PER_WORKER = 3000.0
TARGET_PEER_SPEEDUP = 5.0
PEER_MS_PER_STEP = 2.0  # DBOS Transact (Python), ~10 round trips and 2 transactions per step
PEER_DRAIN_PER_S = 288.0


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """The options of ``kit bench <workload>`` (``positional``: also the workload argument itself)."""
    parser.description = (
        "Measure kit on this database: per-step cost against the floor (one prepared single-row INSERT "
        "per round trip, measured first on the same database), throughput, queue drain rate and "
        f"recovery time. The bench schema (--schema, default '{DEFAULT_SCHEMA}', not the application's "
        "schema) is DROPPED AND RECREATED at the start of every workload; a non-empty schema that kit "
        "bench did not create is refused. Results: a table on stdout and a JSON file."
    )
    parser.epilog = (
        "defaults: seq/par 200 workflows x 10 steps (par: 16 threads); queue-drain 2000 single-step "
        "workflows, 1 worker of concurrency 16; recovery 16 workflows x 6 steps of 0.25 s, lease 2 s"
    )
    for action in parser._actions:  # the shared --schema help names the application's default
        if action.dest == "schema":
            action.help = (f"bench schema, dropped and recreated at the start (default: {DEFAULT_SCHEMA}; "
                           "never the application's schema)")
    if positional:
        parser.add_argument("workload", choices=CHOICES, help="what to measure (all: every workload in turn)")
    parser.add_argument("--workflows", metavar="N", help="workflows per workload (default: per workload)")
    parser.add_argument("--steps", metavar="K", help="steps per workflow (default: 10; queue-drain 1; recovery 6)")
    parser.add_argument("--concurrency", metavar="M",
                        help=f"par: threads starting workflows; queue-drain/recovery: worker concurrency "
                             f"(default {DEFAULT_CONCURRENCY}; recovery: all workflows at once)")
    parser.add_argument("--workers", metavar="W", help=f"queue-drain: worker processes (default {DEFAULT_WORKERS})")
    parser.add_argument("--queue-limit", metavar="L",
                        help="queue-drain: drain a queue with a global concurrency limit of L (default: no limit)")
    parser.add_argument("--lanes", metavar="N",
                        help="Citus: distribute the bench schema over N shards, i.e. N ready lanes (the migration "
                             "runs with citus.shard_count = N; default: the server's citus.shard_count)")
    parser.add_argument("--lease-seconds", metavar="S",
                        help=f"recovery: lease of the bench workers (default {DEFAULT_LEASE:g})")
    parser.add_argument("--step-seconds", metavar="S",
                        help=f"recovery: duration of each slow step (default {DEFAULT_STEP_SECONDS:g})")
    parser.add_argument("--floor-iterations", metavar="N",
                        help=f"INSERTs per floor measurement (default {DEFAULT_FLOOR_ITERATIONS})")
    parser.add_argument("--profile", metavar="PATH",
                        help="seq/par: after measuring, run once more under cProfile (all threads) and "
                             "write pstats to PATH; prints the top functions")
    parser.add_argument("--json", metavar="PATH",
                        help="results file (default bench-results/<workload>-<UTC timestamp>.json)")


@dataclass(frozen=True)
class Params:
    workload: str
    workflows: int | None
    steps: int | None
    concurrency: int | None
    workers: int
    queue_limit: int | None
    lease_seconds: float
    step_seconds: float
    floor_iterations: int
    profile: str | None
    json_path: Path
    lanes: int | None = None  # Citus: shards (= ready lanes) of the bench schema's distributed tables

    def size(self, workload: str) -> tuple[int, int]:
        n, k = SIZES[workload]
        return (self.workflows or n, self.steps or k)


def _number(name: str, value: Any, kind: type, low: float, high: float) -> Any:
    if value is None:
        return None
    try:
        number = kind(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} expects {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        shown = (f"{int(low)} and {int(high):,}" if kind is int else f"{low:g} and {high:g}")
        raise UsageError(f"{name} must be between {shown}, got {value!r}")
    return number


def parse_params(args: argparse.Namespace) -> Params:
    """Validate the options; raise UsageError with a one-line message naming the option."""
    workload = args.workload
    if workload not in CHOICES:
        raise UsageError(f"unknown workload {workload!r}; choose one of {', '.join(CHOICES)}")
    workflows = _number("--workflows", args.workflows, int, 1, 10_000_000)
    steps = _number("--steps", args.steps, int, 1, 100_000)
    concurrency = _number("--concurrency", args.concurrency, int, 1, 256)
    workers = _number("--workers", args.workers, int, 1, 64) or DEFAULT_WORKERS
    queue_limit = _number("--queue-limit", getattr(args, "queue_limit", None), int, 1, 10_000)
    lease = _number("--lease-seconds", args.lease_seconds, float, 0.5, 3600) or DEFAULT_LEASE
    step_seconds = _number("--step-seconds", args.step_seconds, float, 0.01, 60) or DEFAULT_STEP_SECONDS
    floor_iterations = _number("--floor-iterations", args.floor_iterations, int, 10, 10_000_000) \
        or DEFAULT_FLOOR_ITERATIONS
    if workload in ("recovery", "all") and (steps or SIZES["recovery"][1]) < 2:
        raise UsageError("recovery needs --steps of at least 2 so the worker can be killed mid-run")
    if args.profile and workload not in ("seq", "par"):
        raise UsageError("--profile works with the seq and par workloads only")
    if args.json:
        json_path = Path(args.json)
        if json_path.is_dir():
            raise UsageError(f"--json {args.json}: is a directory; give a file path")
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        json_path = Path("bench-results") / f"{workload}-{stamp}.json"
    lanes = _number("--lanes", getattr(args, "lanes", None), int, 1, 1024)
    return Params(workload, workflows, steps, concurrency, workers, queue_limit, lease, step_seconds, floor_iterations,
                  args.profile, json_path, lanes=lanes)
