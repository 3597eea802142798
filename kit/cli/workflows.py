"""``kit workflows list``, ``kit workflow show|cancel|resume|fork`` and ``kit gc``."""

from __future__ import annotations

import argparse
import json
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
from kit.cli.output import (
    duration,
    error_line,
    fmt_time,
    print_messages_events_streams,
    record_json,
    short,
    styled,
)
from kit.errors import UsageError
from kit.lifecycle import parse_age
from kit.storage import Status, WorkflowQuery
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
    lp.add_argument("--json", action="store_true", help="print JSON lines")
    lp.set_defaults(handler=cmd_workflows_list)

    p = sub.add_parser("workflow", help="inspect one workflow")
    wsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    wsub.required = True
    sp = wsub.add_parser("show", help="a workflow and its steps with timings, outputs and errors")
    common(sp)
    sp.add_argument("workflow_id", metavar="ID")
    sp.add_argument("--json", action="store_true")
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
            print(json.dumps(record_json(rec)))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} workflow(s)")
    for col in ("id", "name", "status", "created (UTC)", "duration", "recoveries", "error"):
        table.add_column(col, overflow="fold")
    for rec in rows:
        table.add_row(rec.workflow_id, rec.name, styled(rec.status), fmt_time(rec.created_at),
                      duration(rec.started_at, rec.finished_at), str(rec.recoveries), short(error_line(rec.error)))
    Console().print(table)
    return 0


def order(args: argparse.Namespace) -> str:
    if args.sort and args.oldest_first and args.sort != "oldest":
        raise UsageError(f"--oldest-first contradicts --sort {args.sort}: use one of them")
    if args.sort:
        return SORTS[args.sort]
    return "created_asc" if args.oldest_first else "created_desc"


def cmd_workflow_show(args: argparse.Namespace) -> int:
    validate_workflow_id(args.workflow_id)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        rec = app.backend.workflow_get(args.workflow_id)
        if rec is None:
            raise UsageError(f"no workflow with id {args.workflow_id!r}")
        steps = app.backend.step_list(args.workflow_id)
        children = app.backend.workflow_children(args.workflow_id)
        messages = app.backend.message_list(args.workflow_id)
        events = app.backend.event_list(args.workflow_id)
        streams = app.backend.stream_list(args.workflow_id)
    finally:
        app.close()
    if args.json:
        print(json.dumps({"workflow": record_json(rec), "steps": [record_json(s) for s in steps],
                          "children": [record_json(c) for c in children],
                          "messages": [record_json(m) for m in messages],
                          "events": [record_json(e) for e in events],
                          "streams": [record_json(s) for s in streams]}))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{rec.workflow_id}[/bold]  {rec.name}  {styled(rec.status)}")
    console.print(f"created {fmt_time(rec.created_at)}  started {fmt_time(rec.started_at)}  "
                  f"finished {fmt_time(rec.finished_at)}  duration {duration(rec.started_at, rec.finished_at)}  "
                  f"epoch {rec.epoch}  recoveries {rec.recoveries}")
    console.print(f"inputs: {short(rec.inputs, 200)}", markup=False)
    if rec.status == Status.SUCCESS:
        console.print(f"output: {short(rec.output, 200)}", markup=False)
    if rec.error:
        console.print(f"error: {error_line(rec.error)}", markup=False, style="red")
    table = Table(title="steps")
    for col in ("#", "name", "attempts", "epoch", "started (UTC)", "duration", "output / error"):
        table.add_column(col, overflow="fold")
    for s in steps:
        outcome = short(error_line(s.error), 70) if s.error else short(s.output, 70)
        table.add_row(str(s.step_id), s.name, str(s.attempts), str(s.epoch), fmt_time(s.started_at),
                      duration(s.started_at, s.finished_at), outcome)
    console.print(table)
    if children:
        kids = Table(title=f"children ({len(children)})")
        for col in ("id", "name", "status", "created (UTC)", "duration", "error"):
            kids.add_column(col, overflow="fold")
        for c in children:
            kids.add_row(c.workflow_id, c.name, styled(c.status), fmt_time(c.created_at),
                         duration(c.started_at, c.finished_at), short(error_line(c.error)))
        console.print(kids)
    else:
        console.print("children: none")
    print_messages_events_streams(console, messages, events, streams)
    return 0


def cmd_workflow_cancel(args: argparse.Namespace) -> int:
    validate_workflow_id(args.workflow_id)
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
    validate_workflow_id(args.workflow_id)
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        app.resume(args.workflow_id, timeout=args.timeout)
    finally:
        app.close()
    print(f"resumed {args.workflow_id}: PENDING, a worker will continue it from its last checkpoint")
    return 0


def cmd_workflow_fork(args: argparse.Namespace) -> int:
    validate_workflow_id(args.workflow_id)
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
