"""The lab's invariant checker: G1-G9 from the database and the side-effect ledger.

:func:`evaluate` is a pure function over a :class:`History` (plain data: workflow rows, checkpoint rows,
application-table rows, messages, ledger entries and acknowledged checkpoints), so it can be tested on
hand-made histories. :func:`check` loads a History from a lab schema and ledger directory and evaluates it.

How each guarantee is decided (``E`` is the epoch recorded on a step's checkpoint row):

- G1: one row (one terminal status) per workflow id; a finished workflow's result is the expected one.
- G2: no execution of a checkpointed step in an epoch newer than ``E`` (a newer owner replays it), and no
  ordinary step executed twice by the same owner in the same epoch and attempt. Under asynchronous
  replication, an execution under a claim that a deposed primary acknowledged and lost (its epoch then
  claimed again by another worker) is a lost write, counted as a duplicate (kind ``lost_claim``).
- G3: every execution beyond the checkpointed one is inside the crash window: it belongs to an older
  epoch than ``E`` (its owner died or lost its lease, and its checkpoint never committed), or it is a
  transactional step re-run by the same owner after its transaction rolled back. Counted as duplicates.
  An older execution whose checkpoint was *acknowledged* is a lost acknowledgement instead (G9).
- G4: every checkpoint of a transactional step has exactly one application row, of the same epoch; no
  application row lacks its checkpoint.
- G5: every expected workflow exists and ended in SUCCESS.
- G6: no checkpoint and no acknowledgement from a superseded epoch after the newer epoch's first
  ledger entry (the takeover); checkpoint epochs never go backwards along a workflow's steps; no epoch
  is held by two workers (a lost claim). Under
  asynchronous replication a late acknowledgement whose checkpoint is gone came from a deposed primary
  and epochs can go backwards around a lost checkpoint: both are lost writes, reported under G9.
- G7: the maximum overlap of the limited step's begin/end intervals never exceeds the queue limit (nor,
  per worker process, the per-worker limit); an
  interval ends at its end mark or at the workflow's next epoch's first entry, whichever comes first
  (a superseded owner holds no slot).
- G8: each message is recorded by at most one ``recv`` checkpoint and consumed by the workflow it was
  sent to; the ledger shows no message handled at two step positions. Events: each events-table row holds
  the value of the latest committed ``set_event`` checkpoint of its key, and every ``get_event`` read
  returned a value some committed step set (or None).
- G9: acknowledged checkpoints (ledger ``ack`` entries) missing from the database, or replaced by a newer
  epoch's checkpoint, are lost acknowledgements: a failure under synchronous replication, reported under
  asynchronous replication.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.history import (  # noqa: F401 - the data types are part of the checker's interface
    AppRow,
    EventRow,
    History,
    LedgerEntry,
    MessageRow,
    StepRow,
    WorkflowRow,
    load_history,
    read_acks,
    read_ledger,
)

PASS, FAIL, NA = "pass", "fail", "n-a"
GUARANTEES = ("G1", "G2", "G3", "G4", "G5", "G6", "G7", "G8", "G9")
MAX_EXAMPLES = 5


@dataclass
class GuaranteeResult:
    """The verdict on one guarantee: status pass / fail / n-a and a human-readable detail."""

    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """Not failed (pass or n-a)."""
        return self.status != FAIL


@dataclass
class CheckResult:
    """The verdict on a whole history."""

    guarantees: dict[str, GuaranteeResult]
    duplicates: int
    lost_acks: int
    workflows: int
    stats: dict[str, Any] = field(default_factory=dict)
    takeovers: int = 0  # claims of a workflow at a newer epoch after its first (expired leases, releases)

    @property
    def ok(self) -> bool:
        """True when no guarantee failed."""
        return all(g.ok for g in self.guarantees.values())

    def failures(self) -> dict[str, str]:
        """Failed guarantees and their details."""
        return {k: g.detail for k, g in self.guarantees.items() if not g.ok}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for reports."""
        return {"ok": self.ok, "workflows": self.workflows, "duplicates": self.duplicates,
                "takeovers": self.takeovers, "lost_acks": self.lost_acks,
                "guarantees": {k: asdict(v) for k, v in self.guarantees.items()},
                "stats": self.stats}

    def summary(self) -> str:
        """One line per guarantee, for assertion messages."""
        return "\n".join(f"{k}: {g.status}: {g.detail}" for k, g in self.guarantees.items())


def _examples(items: Sequence[Any]) -> str:
    shown = ", ".join(str(x) for x in items[:MAX_EXAMPLES])
    more = f" (+{len(items) - MAX_EXAMPLES} more)" if len(items) > MAX_EXAMPLES else ""
    return shown + more


def _verdict(problems: list[str], ok_detail: str) -> GuaranteeResult:
    if problems:
        return GuaranteeResult(FAIL, f"{len(problems)} violation(s): {_examples(problems)}")
    return GuaranteeResult(PASS, ok_detail)


def evaluate(history: History, *, sync_replication: bool, queue_limit: int | None,
             worker_queue_limit: int | None = None) -> CheckResult:
    """Decide G1-G9 over a history; why: the same rules apply to the lab and to hand-made histories.

    ``queue_limit``: the limited queue's global concurrency (None: G7 is n-a); ``worker_queue_limit``: its
    per-worker-process limit (None: not checked)."""
    h = history
    g: dict[str, GuaranteeResult] = {}
    rows_by_id: dict[str, list[WorkflowRow]] = defaultdict(list)
    for w in h.workflows:
        rows_by_id[w.workflow_id].append(w)
    checkpoints: dict[tuple[str, int], list[StepRow]] = defaultdict(list)
    for s in h.steps:
        checkpoints[(s.workflow_id, s.step_id)].append(s)
    runs: dict[tuple[str, int], list[LedgerEntry]] = defaultdict(list)
    for e in h.ledger:
        if e.kind == "run":
            runs[(e.workflow_id, e.step_id)].append(e)
    # First ledger time of each (workflow, epoch): when that epoch's owner was demonstrably running it.
    epoch_start: dict[tuple[str, int], float] = {}
    for e in list(h.ledger) + list(h.acks):
        key = (e.workflow_id, e.epoch)
        if key not in epoch_start or e.t < epoch_start[key]:
            epoch_start[key] = e.t

    epochs_of: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (w, ep), t in epoch_start.items():
        epochs_of[w].append((ep, t))

    def takeover_after(wid: str, epoch: int) -> float | None:
        """The earliest ledger time of any newer epoch of ``wid``."""
        times = [t for ep, t in epochs_of.get(wid, ()) if ep > epoch]
        return min(times) if times else None

    # Acknowledged checkpoints: lost when missing or replaced by a newer epoch's row. Counted once per
    # checkpoint position, whatever number of acknowledgements (fresh and replayed) it had.
    lost_epochs: dict[tuple[str, int], set[int]] = defaultdict(set)
    lost_keys: set[tuple[str, int, int]] = set()
    acked: set[tuple[str, int, int]] = set()
    for a in h.acks:
        acked.add((a.workflow_id, a.step_id, a.epoch))
        rows = checkpoints.get((a.workflow_id, a.step_id))
        if not rows or min(r.epoch for r in rows) > a.epoch:
            lost_keys.add((a.workflow_id, a.step_id, a.epoch))
            lost_epochs[(a.workflow_id, a.step_id)].add(a.epoch)
    lost: list[str] = []
    for (wid, step), epochs in sorted(lost_epochs.items()):
        rows = checkpoints.get((wid, step))
        lost.append(f"{wid}#{step} acked at e{sorted(epochs)}" + (" (missing)" if not rows else f" (now e{rows[0].epoch})"))

    # -- G1: one row per id, one terminal status, the one expected result -------------------------------
    problems = []
    for wid, rows in rows_by_id.items():
        if len(rows) > 1:
            problems.append(f"{wid} has {len(rows)} rows with statuses {sorted(r.status for r in rows)}")
        elif rows[0].status == "SUCCESS" and wid in h.expected_outputs and rows[0].output != h.expected_outputs[wid]:
            problems.append(f"{wid} completed with {rows[0].output!r}, expected {h.expected_outputs[wid]!r}")
    g["G1"] = _verdict(problems, f"{len(rows_by_id)} workflow ids, one row and one terminal status each")

    # One epoch held by two workers: a claim that was acknowledged and then lost. Under synchronous
    # replication that breaks fencing; under asynchronous replication it is a lost write (reported), and
    # the late writes of the owners involved are not fencing failures either, nor (G2) a step run under
    # such a claim: the deposed primary that acknowledged the claim did not have the step's checkpoint.
    owners_of: dict[tuple[str, int], set[str]] = defaultdict(set)
    for e in list(h.ledger) + list(h.acks):
        if e.worker:
            owners_of[(e.workflow_id, e.epoch)].add(e.worker)
    reused = sorted(k for k, v in owners_of.items() if len(v) > 1)
    reused_wf = {w for w, _ep in reused}
    lost_claims = set(reused) if not sync_replication else set()

    # -- G2 / G3: executions against checkpoints ----------------------------------------------------------
    g2: list[str] = []
    g3: list[str] = []
    duplicates = 0
    dup_after_lost_ack = 0
    dup_examples: list[str] = []  # which step, which epochs, whose run was lost
    # Why each duplicate happened: an older epoch's run of an ordinary step whose checkpoint never committed
    # (its worker died, froze or was cut off: the G3 window), a transactional step run again after its
    # transaction rolled back (by its owner or a later epoch; nothing of the first run committed, G4), one
    # epoch run by two workers (a lost claim), or a run whose acknowledged checkpoint was lost (G9).
    dup_kinds: Counter[str] = Counter()
    for key, entries in runs.items():
        wid, step = key
        rows = checkpoints.get(key)
        name = entries[0].name or ""
        tx = name in h.tx_step_names
        if not rows:
            wf = rows_by_id.get(wid)
            if lost_epochs.get(key):
                # Its checkpoint was acknowledged (to this run or, replayed, to a later epoch's: the run died
                # between its commit and its own ack) and is gone: a lost write, G9 decides.
                duplicates += len(entries)
                dup_after_lost_ack += len(entries)
                dup_kinds["after_lost_ack"] += len(entries)
            elif wf and wf[0].status == "SUCCESS":
                g3.append(f"{wid}#{step} ({name}) ran {len(entries)}x but has no checkpoint in a finished workflow")
            continue
        cp = min(rows, key=lambda r: r.epoch)
        newer = [e for e in entries if e.epoch > cp.epoch]
        under_lost_claim = [e for e in newer if (wid, e.epoch) in lost_claims]
        if under_lost_claim:
            newer = [e for e in newer if (wid, e.epoch) not in lost_claims]
            duplicates += len(under_lost_claim)
            dup_kinds["lost_claim"] += len(under_lost_claim)
            dup_examples += [f"{wid}#{step} {name} e{cp.epoch} ran again at e{e.epoch} under a lost claim (by "
                             f"{e.worker})" for e in under_lost_claim]
        if newer:
            g2.append(f"{wid}#{step} ({name}) checkpointed at e{cp.epoch} ran again at "
                      f"e{sorted({e.epoch for e in newer})}")
        same = [e for e in entries if e.epoch == cp.epoch]
        by_owner = Counter((e.worker, e.attempt) for e in same)
        owners = {e.worker for e in same}
        for (worker, attempt), count in by_owner.items():
            if count > 1:
                if tx:
                    duplicates += count - 1  # rolled-back transaction run again by its owner
                    dup_kinds["tx_rolled_back"] += count - 1
                    dup_examples.append(f"{wid}#{step} {name} {count}x at e{cp.epoch} by {worker} (rolled back)")
                else:
                    g2.append(f"{wid}#{step} ({name}) ran {count}x at e{cp.epoch} attempt {attempt} by {worker}")
        if len(owners) > 1:
            duplicates += len(owners) - 1  # one epoch, two owners: a lost claim (G6 decides whether allowed)
            dup_kinds["two_owners_one_epoch"] += len(owners) - 1
        older = [e for e in entries if e.epoch < cp.epoch]
        for e in older:
            duplicates += 1
            dup_examples.append(f"{wid}#{step} {name} e{e.epoch}->e{cp.epoch} (ran by {e.worker or e.pid})")
            if (wid, step, e.epoch) in acked:
                dup_after_lost_ack += 1
                dup_kinds["after_lost_ack"] += 1
            elif tx:  # its transaction never committed (G4 checks that): only effects outside it repeat
                dup_kinds["tx_rolled_back"] += 1
            else:
                dup_kinds["older_epoch"] += 1
    g["G2"] = _verdict(g2, f"{len(checkpoints)} checkpoints; no step ran again after its checkpoint"
                       + (f" ({dup_after_lost_ack} re-runs after lost acknowledgements, see G9)"
                          if dup_after_lost_ack else ""))
    g["G3"] = _verdict(g3, f"{duplicates} duplicate execution(s), all in the crash window"
                       + (f", {dup_after_lost_ack} of them after a lost acknowledgement" if dup_after_lost_ack else ""))

    # -- G4: application rows <=> transactional checkpoints -----------------------------------------------
    problems = []
    app_by_key: dict[tuple[str, int], list[AppRow]] = defaultdict(list)
    for r in h.app_rows:
        app_by_key[(r.workflow_id, r.step_id)].append(r)
    tx_checkpoints = {k: v[0] for k, v in checkpoints.items() if v[0].name in h.tx_step_names}
    for key, cp in tx_checkpoints.items():
        got = app_by_key.get(key, [])
        if len(got) != 1:
            problems.append(f"{key[0]}#{key[1]} checkpointed at e{cp.epoch} has {len(got)} application rows")
        elif got[0].epoch != cp.epoch:
            problems.append(f"{key[0]}#{key[1]} checkpoint e{cp.epoch} but application row e{got[0].epoch}")
    for key, got in app_by_key.items():
        if key not in tx_checkpoints:
            problems.append(f"{key[0]}#{key[1]} has {len(got)} application row(s) and no checkpoint")
    g["G4"] = _verdict(problems, f"{len(tx_checkpoints)} transactional checkpoints, one application row each")

    # -- G5: nothing lost -----------------------------------------------------------------------------------
    problems = []
    statuses = Counter()
    for wid in h.expected_ids:
        rows = rows_by_id.get(wid)
        if not rows:
            problems.append(f"{wid} missing")
            statuses["MISSING"] += 1
            continue
        statuses[rows[0].status] += 1
        if rows[0].status != "SUCCESS":
            problems.append(f"{wid} is {rows[0].status}")
    g["G5"] = _verdict(problems, f"all {len(h.expected_ids)} expected workflows SUCCESS")

    # -- G6: fencing ---------------------------------------------------------------------------------------
    problems = []
    takeovers = 0
    deposed_acks = 0
    by_wf_steps: dict[str, list[StepRow]] = defaultdict(list)
    for s in h.steps:
        by_wf_steps[s.workflow_id].append(s)
    if sync_replication:
        problems += [f"{w} epoch {ep} held by {len(owners_of[(w, ep)])} workers" for w, ep in reused]
    lost_claim_writes = 0
    for wid, rows in by_wf_steps.items():
        ordered = sorted(rows, key=lambda r: r.step_id)
        for prev, cur in zip(ordered, ordered[1:], strict=False):
            # Under asynchronous replication a lost checkpoint re-run by a newer epoch can precede a
            # surviving one of the older epoch; that is a lost write (G9), not a fencing failure.
            if cur.epoch < prev.epoch and sync_replication:
                problems.append(f"{wid}#{cur.step_id} checkpointed at e{cur.epoch} after #{prev.step_id} at "
                                f"e{prev.epoch}")
        for r in rows:
            t_new = takeover_after(wid, r.epoch)
            if t_new is not None and r.finished_at is not None and r.finished_at > t_new:
                if not sync_replication and wid in reused_wf:
                    lost_claim_writes += 1
                    continue
                problems.append(f"{wid}#{r.step_id} committed by e{r.epoch} at {r.finished_at:.3f} after a newer "
                                f"epoch started at {t_new:.3f}")
    takeovers = sum(max(0, w.epoch - 1) for w in h.workflows)  # claims after the first
    for a in h.acks:
        rows = checkpoints.get((a.workflow_id, a.step_id))
        if not a.fresh or not rows or min(r.epoch for r in rows) <= a.epoch:
            continue
        t_new = takeover_after(a.workflow_id, a.epoch)
        if t_new is not None and a.t > t_new:
            if not sync_replication:
                deposed_acks += 1  # a deposed primary acknowledged it (asynchronous split brain): see G9
                continue
            problems.append(f"{a.workflow_id}#{a.step_id} acknowledged to e{a.epoch} at {a.t:.3f} after a newer "
                            f"epoch started at {t_new:.3f}")
    # Step bodies a superseded owner ran after the takeover (a frozen zombie resuming inside a step): the
    # G3 window's overlap case, allowed because their checkpoints are refused; counted for the report.
    stale_runs = 0
    for e in h.ledger:
        if e.kind == "run":
            t_new = takeover_after(e.workflow_id, e.epoch)
            if t_new is not None and e.t > t_new:
                stale_runs += 1
    g["G6"] = _verdict(problems, f"{takeovers} takeover(s); no write from a superseded epoch after takeover"
                       + (f"; {deposed_acks} acknowledgement(s) from a deposed primary after takeover, lost "
                          "(asynchronous replication, see G9)" if deposed_acks else "")
                       + (f"; {len(reused)} epoch(s) reused after a lost claim with {lost_claim_writes} late "
                          "write(s) (asynchronous replication)" if reused and not sync_replication else ""))

    # -- G7: concurrency limit of the limited queue --------------------------------------------------------
    max_overlap = 0
    if queue_limit is None:
        g["G7"] = GuaranteeResult(NA, "no limited queue in this workload")
    else:
        spans = _limited_intervals(h, takeover_after)
        intervals = [(a, b) for a, b, _w in spans]
        max_overlap, at = _max_overlap(intervals)
        per_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for a, b, w in spans:
            per_worker[w].append((a, b))
        worst_worker, worst_worker_at, worst_worker_overlap = "", 0.0, 0
        for w, ivs in per_worker.items():
            n_w, t_w = _max_overlap(ivs)
            if n_w > worst_worker_overlap:
                worst_worker, worst_worker_at, worst_worker_overlap = w, t_w, n_w
        worker_note = (f"; per worker max {worst_worker_overlap} <= {worker_queue_limit}"
                       if worker_queue_limit is not None else "")
        if max_overlap > queue_limit:
            g["G7"] = GuaranteeResult(FAIL, f"max overlap {max_overlap} > limit {queue_limit} at t={at:.3f} "
                                      f"over {len(intervals)} executions")
        elif worker_queue_limit is not None and worst_worker_overlap > worker_queue_limit:
            g["G7"] = GuaranteeResult(FAIL, f"worker {worst_worker} ran {worst_worker_overlap} at once > per-worker "
                                      f"limit {worker_queue_limit} at t={worst_worker_at:.3f}")
        elif not intervals:
            g["G7"] = GuaranteeResult(FAIL, f"no execution of {sorted(h.limited_step_names)} in the ledger: "
                                      "the limit was never exercised")
        else:
            g["G7"] = GuaranteeResult(PASS, f"max overlap {max_overlap} <= limit {queue_limit} over "
                                      f"{len(intervals)} executions{worker_note}")

    # -- G8: messages received at most once ----------------------------------------------------------------
    problems = []
    received: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for s in h.steps:
        if s.name.startswith(h.recv_prefix) and isinstance(s.output, dict) and s.output.get("msg") is not None:
            received[str(s.output["msg"])].append((s.workflow_id, s.step_id))
            receiver = str(s.output["msg"]).rpartition("->")[2]
            if "->" in str(s.output["msg"]) and receiver != s.workflow_id:
                problems.append(f"message {s.output['msg']} received by {s.workflow_id}")
    for msg, where in received.items():
        if len(where) > 1:
            problems.append(f"message {msg} received {len(where)}x at {sorted(where)}")
    handled: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for e in h.ledger:
        if e.kind == "run" and e.msg is not None:
            handled[e.msg].add((e.workflow_id, e.step_id))
    for msg, where in handled.items():
        if len(where) > 1:
            problems.append(f"message {msg} handled at {len(where)} step positions {sorted(where)}")
    sent = Counter(m.msg for m in h.messages if m.msg is not None)
    for msg, count in sent.items():
        if count > 1:
            problems.append(f"message {msg} was sent {count}x (a workflow's send must deliver once)")
    unconsumed = 0
    for m in h.messages:
        if m.consumed_step is None:
            unconsumed += 1
            continue
        rows = checkpoints.get((m.workflow_id, m.consumed_step))
        if not rows or not isinstance(rows[0].output, dict) or rows[0].output.get("msg") != m.msg:
            problems.append(f"message {m.msg} consumed by {m.workflow_id}#{m.consumed_step} without a matching "
                            "recv checkpoint")
    event_sets: dict[tuple[str, str], dict[int, Any]] = defaultdict(dict)
    for s in h.steps:
        if s.name.startswith(h.set_event_prefix):
            event_sets[(s.workflow_id, s.name[len(h.set_event_prefix):])][s.step_id] = s.output
    for ev in h.events:
        sets = event_sets.get((ev.workflow_id, ev.key), {})
        if ev.step_id not in sets:
            problems.append(f"event {ev.workflow_id}/{ev.key} was set by step #{ev.step_id}, which has no checkpoint")
        elif ev.step_id != max(sets) or sets[ev.step_id] != ev.value:
            problems.append(f"event {ev.workflow_id}/{ev.key} holds {ev.value!r} of step #{ev.step_id}, not the latest "
                            f"committed value {sets[max(sets)]!r} of step #{max(sets)}")
    events_by_key = {(ev.workflow_id, ev.key) for ev in h.events}
    for (wid, key), sets in event_sets.items():
        if (wid, key) not in events_by_key:
            problems.append(f"event {wid}/{key} was set by committed steps {sorted(sets)} but has no row")
    reads = 0
    for s in h.steps:
        if not s.name.startswith(h.get_event_prefix):
            continue
        target, _, key = s.name[len(h.get_event_prefix):].rpartition(":")
        reads += 1
        committed = list(event_sets.get((target, key), {}).values())
        if s.output is not None and s.output not in committed:
            problems.append(f"{s.workflow_id}#{s.step_id} read event {target}/{key} = {s.output!r}, a value no "
                            "committed step set")
    if not received and not h.messages and not event_sets and not reads:
        g["G8"] = GuaranteeResult(NA, "no messages or events in this workload") if not problems \
            else _verdict(problems, "")
    else:
        g["G8"] = _verdict(problems, f"{len(received)} message(s) received once each"
                           + (f"; {unconsumed} never consumed" if unconsumed else "")
                           + f"; {len(h.events)} event(s) hold their latest committed value; {reads} event read(s) "
                           "returned committed values")

    # -- G9: acknowledged checkpoints survive failover ------------------------------------------------------
    if lost and sync_replication:
        g["G9"] = GuaranteeResult(FAIL, f"{len(lost)} acknowledged checkpoint(s) lost under synchronous "
                                  f"replication: {_examples(lost)}")
    elif lost:
        g["G9"] = GuaranteeResult(NA, f"asynchronous replication: {len(lost)} acknowledged checkpoint(s) lost "
                                  f"(reported, not a failure): {_examples(lost)}")
    elif not h.acks:
        g["G9"] = GuaranteeResult(FAIL, "no acknowledged checkpoints in the ledger: nothing to check G9 against")
    else:
        mode = "synchronous" if sync_replication else "asynchronous"
        positions = len({(w, st) for w, st, _ep in acked})
        g["G9"] = GuaranteeResult(PASS, f"{positions} acknowledged checkpoints all present ({mode} replication)")

    stats = {
        "statuses": dict(statuses),
        "checkpoints": len(h.steps),
        "executions": sum(len(v) for v in runs.values()),
        "acks": len(h.acks),
        "takeovers": takeovers,
        "stale_runs_after_takeover": stale_runs,
        "deposed_acks": deposed_acks,
        "reused_epochs": len(reused),
        "max_overlap": max_overlap,
        "queue_limit": queue_limit,
        "worker_queue_limit": worker_queue_limit,
        "duplicates_after_lost_ack": dup_after_lost_ack,
        "duplicate_kinds": dict(dup_kinds),
        "duplicate_examples": sorted(dup_examples)[:20],
        "torn_ledger_lines": h.torn_lines,
        "recoveries": sum(w.recoveries for w in h.workflows),
    }
    return CheckResult(guarantees={k: g[k] for k in GUARANTEES}, duplicates=duplicates, lost_acks=len(lost),
                       workflows=len(h.expected_ids), stats=stats, takeovers=takeovers)


def _limited_intervals(h: History, takeover_after: Callable[[str, int], float | None]
                       ) -> list[tuple[float, float, str]]:
    """Begin/end intervals (and worker) of the limited step, each cut at the workflow's next epoch (the
    superseded owner's slot is given up at the takeover)."""
    begins: dict[tuple[str, int, int, str, int | None], list[float]] = defaultdict(list)
    ends: dict[tuple[str, int, int, str, int | None], list[float]] = defaultdict(list)
    finished: dict[str, float] = {}
    for s in h.steps:
        if s.finished_at is not None:
            finished[s.workflow_id] = max(finished.get(s.workflow_id, 0.0), s.finished_at)
    for e in h.ledger:
        if e.name not in h.limited_step_names:
            continue
        key = (e.workflow_id, e.step_id, e.epoch, e.worker, e.attempt)
        if e.kind == "begin":
            begins[key].append(e.t)
        elif e.kind == "end":
            ends[key].append(e.t)
    intervals = []
    for key, starts in begins.items():
        wid, _step, epoch = key[0], key[1], key[2]
        stops = sorted(ends.get(key, []))
        cut = takeover_after(wid, epoch)
        for i, start in enumerate(sorted(starts)):
            end = stops[i] if i < len(stops) else (cut if cut is not None else finished.get(wid, start))
            if cut is not None:
                end = min(end, cut)
            intervals.append((start, max(start, end), key[3]))
    return intervals


def _max_overlap(intervals: Iterable[tuple[float, float]]) -> tuple[int, float]:
    """Largest number of intervals open at one instant (an end at t closes before a begin at t)."""
    points = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end, -1))
    points.sort(key=lambda p: (p[0], p[1]))
    best, cur, at = 0, 0, 0.0
    for t, d in points:
        cur += d
        if cur > best:
            best, at = cur, t
    return best, at


def check(database_url: str, schema: str, ledger_dir: str | os.PathLike[str], expected_ids: Sequence[str], *,
          sync_replication: bool, acked_log: Any = None) -> CheckResult:
    """Load a lab run (database + ledger) and evaluate G1-G9; why: the verdict after every scenario."""
    history, limit, worker_limit = load_history(database_url, schema, ledger_dir, expected_ids, acked_log=acked_log)
    return evaluate(history, sync_replication=sync_replication, queue_limit=limit, worker_queue_limit=worker_limit)
