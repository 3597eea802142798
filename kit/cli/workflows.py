"""``kit workflows list``, ``kit workflow show|cancel|resume|fork`` and ``kit gc``."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from kit.cli.args import (
    SORTS,
    Parser,
    app_from_args,
    common,
    non_negative_int,
    positive_int,
    require_schema,
    status_arg,
    timeout_arg,
    when_arg,
)
from kit.cli.output import console, print_json, record_json
from kit.errors import UsageError
from kit.lifecycle import parse_age
from kit.storage import WorkflowQuery
from kit.validation import validate_workflow_id


def add_parsers(sub: Any) -> None:
    """Register ``workflows``, ``workflow`` and ``gc``."""
    p = sub.add_parser("workflows", help="query workflows")
    wsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    wsub.required = True
    lp = wsub.add_parser("list", help="list workflows, newest first")
    common(lp)
    lp.add_argument("--status", action="append", type=status_arg, help="filter by status (repeatable)")
    lp.add_argument("--name", help="filter by workflow name")
    lp.add_argument("--queue", help="filter by queue")
    lp.add_argument("--version", dest="app_version", help="filter by application version")
    lp.add_argument("--since", type=when_arg, help="created at or after: ISO time or age like 30m, 2h, 7d")
    lp.add_argument("--until", type=when_arg, help="created before: ISO time or age")
    lp.add_argument("--error", dest="error_contains", help="error text contains")
    lp.add_argument("--oldest-first", action="store_true", help="sort oldest first (same as --sort oldest)")
    lp.add_argument("--sort", choices=sorted(SORTS), help="newest (default), oldest, finished (latest finish "
                    "first) or slowest (longest duration first)")
    lp.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")
    lp.add_argument("--wide", action="store_true", help="whole ids and times, full error text (may wrap)")
    lp.add_argument("--json", action="store_true", help="print one JSON object per workflow (docs/observability.md)")
    lp.set_defaults(handler=cmd_workflows_list)

    p = sub.add_parser("workflow", help="inspect one workflow")
    wsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    wsub.required = True
    sp = wsub.add_parser("show", help="a workflow and its steps with timings, outputs and errors")
    common(sp)
    sp.add_argument("workflow_id", metavar="ID")
    sp.add_argument("--wide", action="store_true", help="whole ids, times and values (may wrap)")
    sp.add_argument("--json", action="store_true", help="print one JSON object (docs/observability.md)")
    sp.set_defaults(handler=cmd_workflow_show)
    cp = wsub.add_parser("cancel", help="cancel a workflow and its unfinished children (stops at the next step)")
    common(cp)
    cp.add_argument("workflow_id", metavar="ID")
    cp.set_defaults(handler=cmd_workflow_cancel)
    rp = wsub.add_parser("resume", help="run a CANCELLED or ERROR workflow again from its last checkpoint")
    common(rp)
    rp.add_argument("workflow_id", metavar="ID")
    rp.add_argument("--timeout", type=timeout_arg, help="new deadline, seconds from now (default: none)")
    rp.set_defaults(handler=cmd_workflow_resume)
    fp = wsub.add_parser("fork", help="start a copy that reuses the checkpoints of steps before --from-step")
    common(fp)
    fp.add_argument("workflow_id", metavar="ID")
    fp.add_argument("--from-step", type=non_negative_int, required=True,
                    help="first step to run anew (steps before it are reused)")
    fp.add_argument("--new-id", help="id of the new workflow (default: a random UUID)")
    fp.add_argument("--app-version", help="application version to record on the fork (default: unversioned, "
                    "so any worker that has the workflow runs it)")
    fp.add_argument("--timeout", type=timeout_arg, help="deadline of the fork, seconds from now")
    fp.set_defaults(handler=cmd_workflow_fork)

    p = sub.add_parser("gc", help="delete finished workflows older than an age, in batches (never live ones)")
    common(p)
    p.add_argument("--older-than", required=True, metavar="AGE", help="age like 30d, 12h, 90m (finish time)")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="workflows per transaction (default 1000)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(handler=cmd_gc)


def cmd_workflows_list(args: argparse.Namespace) -> int:
    app = app_from_args(args, migrate=False)
    query = WorkflowQuery(statuses=tuple(args.status or ()), name=args.name, queue=args.queue,
                          app_version=args.app_version, since=args.since, until=args.until,
                          error_contains=args.error_contains, limit=args.limit, order=order(args))
    try:
        require_schema(app)
        rows = app.backend.workflow_list(query)
    finally:
        app.close()
    if args.json:
        for rec in rows:
            print_json(record_json(rec))
        return 0
    from kit.cli.views import workflows_table

    out = console()
    out.print(workflows_table(rows, now=datetime.now(timezone.utc), width=out.width, wide=args.wide))
    return 0


def order(args: argparse.Namespace) -> str:
    if args.sort and args.oldest_first and args.sort != "oldest":
        raise UsageError(f"--oldest-first contradicts --sort {args.sort}: use one of them")
    if args.sort:
        return SORTS[args.sort]
    return "created_asc" if args.oldest_first else "created_desc"


def cmd_workflow_show(args: argparse.Namespace) -> int:
    check_id(args.workflow_id)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        rec = app.backend.workflow_get(args.workflow_id)
        if rec is None:
            raise UsageError(_not_found(args.workflow_id))
        steps = app.backend.step_list(args.workflow_id)
        children = app.backend.workflow_children(args.workflow_id)
        messages = app.backend.message_list(args.workflow_id)
        events = app.backend.event_list(args.workflow_id)
        streams = app.backend.stream_list(args.workflow_id)
    finally:
        app.close()
    if args.json:
        print_json({"workflow": record_json(rec), "steps": [record_json(s) for s in steps],
                    "children": [record_json(c) for c in children],
                    "messages": [record_json(m) for m in messages],
                    "events": [record_json(e) for e in events],
                    "streams": [record_json(s) for s in streams]})
        return 0
    from kit.cli.views import workflow_view

    out = console()
    out.print(workflow_view(rec, steps, children, messages, events, streams, now=datetime.now(timezone.utc),
                            width=out.width, wide=args.wide))
    return 0


def check_id(workflow_id: str) -> None:
    """A valid id; an id copied from a table where it was shortened gets a hint where the whole one is."""
    if workflow_id.endswith("…"):
        raise UsageError(f"{workflow_id!r} is a shortened id: `kit workflows list --wide` (or --json) shows "
                         "ids whole")
    validate_workflow_id(workflow_id)


def _not_found(workflow_id: str) -> str:
    return f"no workflow with id {workflow_id!r}"


def cmd_workflow_cancel(args: argparse.Namespace) -> int:
    check_id(args.workflow_id)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        ids = app.cancel(args.workflow_id)
        status = app.backend.workflow_get(args.workflow_id)
    finally:
        app.close()
    if not ids:
        print(f"{args.workflow_id} had already finished ({status.status.value if status else 'gone'}); "
              "nothing cancelled")
        return 0
    print(f"cancelled {len(ids)} workflow(s): {', '.join(ids)}")
    return 0


def cmd_workflow_resume(args: argparse.Namespace) -> int:
    check_id(args.workflow_id)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        app.resume(args.workflow_id, timeout=args.timeout)
    finally:
        app.close()
    print(f"resumed {args.workflow_id}: PENDING, a worker will continue it from its last checkpoint")
    return 0


def cmd_workflow_fork(args: argparse.Namespace) -> int:
    check_id(args.workflow_id)
    app = app_from_args(args, migrate=False, app_version=args.app_version)
    try:
        require_schema(app)
        handle = app.fork(args.workflow_id, from_step=args.from_step, new_workflow_id=args.new_id,
                          timeout=args.timeout)
    finally:
        app.close()
    print(f"forked {args.workflow_id} from step {args.from_step} as {handle.workflow_id}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    age = parse_age(args.older_than)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        n = app.gc(age, batch_size=args.batch_size, dry_run=args.dry_run)
    finally:
        app.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {n} workflow(s) finished more than {args.older_than} ago")
    return 0
