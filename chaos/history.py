"""What the lab's checker looks at: a run's history as plain data, and how it is read from a lab schema and
its ledger directory (:func:`load_history`). The verdicts are :mod:`chaos.checker`'s."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WorkflowRow:
    """One row of the workflows table."""

    workflow_id: str
    status: str
    epoch: int = 1
    name: str = ""
    output: Any = None  # decoded JSON output (None when not SUCCESS)
    recoveries: int = 0


@dataclass(frozen=True)
class StepRow:
    """One checkpoint: ``finished_at`` is its commit time as UNIX seconds (None when unknown)."""

    workflow_id: str
    step_id: int
    name: str
    epoch: int
    finished_at: float | None = None
    output: Any = None  # decoded JSON output


@dataclass(frozen=True)
class AppRow:
    """A row the transactional step wrote to the application table."""

    workflow_id: str
    step_id: int
    epoch: int


@dataclass(frozen=True)
class MessageRow:
    """A message in the messages table: ``msg`` is the message id carried in its body."""

    workflow_id: str  # the receiver
    msg: str | None
    consumed_step: int | None


@dataclass(frozen=True)
class EventRow:
    """A row of the events table: the latest ``value`` (decoded) of ``key``, set by step ``step_id``."""

    workflow_id: str
    key: str
    value: Any
    step_id: int


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger line: ``kind`` is run / begin / end / ack; ``t`` is UNIX time on the worker's clock."""

    kind: str
    workflow_id: str
    step_id: int
    name: str | None
    epoch: int
    t: float
    attempt: int | None = None
    pid: int = 0
    worker: str = ""
    msg: str | None = None
    fresh: bool | None = None


@dataclass
class History:
    """Everything the checker looks at, as plain data."""

    expected_ids: list[str]
    workflows: list[WorkflowRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    app_rows: list[AppRow] = field(default_factory=list)
    messages: list[MessageRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)  # run / begin / end entries
    acks: list[LedgerEntry] = field(default_factory=list)  # acknowledged checkpoints
    expected_outputs: dict[str, Any] = field(default_factory=dict)  # id -> expected result (optional)
    tx_step_names: frozenset[str] = frozenset({"lab.record"})
    limited_step_names: frozenset[str] = frozenset({"lab.limited_work"})
    recv_prefix: str = "recv:"
    set_event_prefix: str = "set_event:"
    get_event_prefix: str = "get_event:"
    torn_lines: int = 0  # ledger lines that could not be parsed (a write cut by SIGKILL)


# -- loading a History from a lab run ----------------------------------------------------------------------
def read_ledger(ledger_dir: str | os.PathLike[str]) -> tuple[list[LedgerEntry], list[LedgerEntry], int]:
    """All ledger entries of a directory: ``(executions and marks, acks, torn lines)``."""
    entries: list[LedgerEntry] = []
    acks: list[LedgerEntry] = []
    torn = 0
    for path in sorted(Path(ledger_dir).glob("ledger-*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    e = _entry(d)
                except (ValueError, KeyError, TypeError):
                    torn += 1
                    continue
                (acks if e.kind == "ack" else entries).append(e)
    return entries, acks, torn


def _entry(d: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(kind=d["kind"], workflow_id=d["wf"], step_id=int(d["step"]), name=d.get("name"),
                       epoch=int(d["epoch"]), t=float(d["t"]), attempt=d.get("attempt"), pid=int(d.get("pid", 0)),
                       worker=str(d.get("worker", "")), msg=d.get("msg"), fresh=d.get("fresh"))


def read_acks(source: str | os.PathLike[str] | Iterable[dict[str, Any] | LedgerEntry]) -> list[LedgerEntry]:
    """Acknowledged checkpoints from a JSON-lines file (or an iterable of dicts / entries)."""
    if isinstance(source, (str, os.PathLike)):
        out = []
        with open(source, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        out.append(_entry({"kind": "ack", **json.loads(line)}))
                    except (ValueError, KeyError, TypeError):
                        continue
        return out
    return [x if isinstance(x, LedgerEntry) else _entry({"kind": "ack", **x}) for x in source]


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_history(database_url: str, schema: str, ledger_dir: str | os.PathLike[str], expected_ids: Sequence[str],
                 *, acked_log: Any = None) -> tuple[History, int | None, int | None]:
    """Read a lab run into a History plus the limited queue's global and per-worker concurrency limits
    (None when not declared)."""
    import psycopg
    from psycopg import sql

    from chaos import lab_app

    s = sql.Identifier(schema)
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        wf_rows = conn.execute(sql.SQL(
            "SELECT workflow_id, status, epoch, name, output, recoveries FROM {}.workflows").format(s)).fetchall()
        step_rows = conn.execute(sql.SQL(
            "SELECT workflow_id, step_id, name, epoch, extract(epoch FROM finished_at)::float8, output "
            "FROM {}.steps").format(s)).fetchall()
        app_rows = conn.execute(sql.SQL("SELECT workflow_id, step_id, epoch FROM {}.{}").format(
            s, sql.Identifier(lab_app.APP_TABLE))).fetchall()
        event_rows = conn.execute(sql.SQL("SELECT workflow_id, key, value, step_id FROM {}.events").format(s)).fetchall()
        msg_rows = conn.execute(sql.SQL("SELECT workflow_id, body, consumed_step FROM {}.messages").format(s)).fetchall()
        limit_row = conn.execute(sql.SQL("SELECT concurrency_limit, worker_concurrency_limit FROM {}.v_queues "
                                         "WHERE queue = %s").format(s), (lab_app.LIMITED_QUEUE,)).fetchone()
    entries, acks, torn = read_ledger(ledger_dir)
    if acked_log is not None:
        acks = read_acks(acked_log)
    total = len(expected_ids)
    expected_outputs = {}
    for wid in expected_ids:
        n = lab_app.number_of(wid)
        if n is not None:
            expected_outputs[wid] = lab_app.expected_output(n, total)
    messages = []
    for wid, body, consumed in msg_rows:
        decoded = _json(body)
        msg = decoded.get("msg") if isinstance(decoded, dict) else None
        messages.append(MessageRow(wid, msg, consumed))
    history = History(
        expected_ids=list(expected_ids),
        workflows=[WorkflowRow(w, st, int(ep), name, _json(out) if st == "SUCCESS" else None, int(rec or 0))
                   for w, st, ep, name, out, rec in wf_rows],
        steps=[StepRow(w, int(sid), name, int(ep), fin, _json(out)) for w, sid, name, ep, fin, out in step_rows],
        app_rows=[AppRow(w, int(sid), int(ep)) for w, sid, ep in app_rows],
        messages=messages,
        events=[EventRow(w, k, _json(v), int(sid)) for w, k, v, sid in event_rows],
        ledger=entries,
        acks=acks,
        expected_outputs=expected_outputs,
        tx_step_names=frozenset({lab_app.TX_STEP}),
        limited_step_names=frozenset({lab_app.LIMITED_STEP}),
        torn_lines=torn,
    )
    limit = int(limit_row[0]) if limit_row and limit_row[0] is not None else None
    worker_limit = int(limit_row[1]) if limit_row and limit_row[1] is not None else None
    return history, limit, worker_limit
