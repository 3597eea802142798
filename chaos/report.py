"""Scenario reports of the chaos lab: one JSON file per scenario and a rich summary table of all of them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from kit.config import redact_url

GUARANTEE_IDS = ("G1", "G2", "G3", "G4", "G5", "G6", "G7", "G8", "G9")


@dataclass
class ScenarioReport:
    """What one scenario did and what the checker found.

    ``timeline``: ``(seconds since the scenario started, event)``; ``guarantees``: id -> ``{"status":
    "pass"|"fail"|"n-a", "detail": str}`` (``CheckResult.to_dict()["guarantees"]``).
    """

    name: str
    variant: str
    timeline: list[tuple[float, str]] = field(default_factory=list)
    fault_to_first_checkpoint_s: float | None = None
    drain_s: float | None = None
    workflows: int = 0
    duplicates: int = 0
    takeovers: int = 0  # claims at a newer epoch after the first (chaos.checker.CheckResult.takeovers)
    lost_acks: int = 0
    guarantees: dict[str, dict[str, str]] = field(default_factory=dict)
    ok: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept CheckResult.guarantees (GuaranteeResult objects) as well as plain dicts.
        self.guarantees = {k: v if isinstance(v, dict) else {"status": v.status, "detail": v.detail}
                           for k, v in self.guarantees.items()}

    def event(self, t_seconds: float, text: str) -> None:
        """Append a timeline event (credentials in URLs are redacted)."""
        self.timeline.append((round(float(t_seconds), 3), _redact(text)))

    def apply_check(self, result: Any) -> None:
        """Copy a ``CheckResult`` into this report (guarantees, duplicates, takeovers, lost acks, ok, stats)."""
        d = result.to_dict()
        self.guarantees = d["guarantees"]
        self.duplicates = d["duplicates"]
        self.takeovers = d.get("takeovers", 0)
        self.lost_acks = d["lost_acks"]
        self.workflows = d["workflows"]
        self.ok = d["ok"]
        self.extra.setdefault("stats", d.get("stats", {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["timeline"] = [[t, e] for t, e in self.timeline]
        return d

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON (atomically); returns the path; why: CI keeps them as artefacts."""
        p = Path(path)
        if p.is_dir():
            p = p / f"{_slug(self.name)}-{_slug(self.variant)}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(_redact(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)) + "\n")
        os.replace(tmp, p)
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScenarioReport:
        """Inverse of :meth:`to_dict`."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["timeline"] = [(float(t), str(e)) for t, e in d.get("timeline", [])]
        return cls(**known)


def load_reports(directory: str | os.PathLike[str]) -> list[ScenarioReport]:
    """Every ``*.json`` scenario report of a directory, in file-name order (unreadable files skipped)."""
    out = []
    for p in sorted(Path(directory).glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and "name" in d and "variant" in d:
            out.append(ScenarioReport.from_dict(d))
    return out


def _fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


# The summary table's legend, printed under it (what each column means; docs/lab.md "Results").
LEGEND = (
    "wf: workflows in the scenario's workload · fault→ckpt s: seconds from the fault to the first checkpoint "
    "committed after it (0.0: work never stopped) · drain s: seconds from the fault until every workflow "
    "finished · dup: step executions re-run inside the documented crash window (G3) · lost ack: acknowledged "
    "checkpoints missing afterwards · G1–G9: the guarantees of docs/guarantees.md, ✓ held, ✗ violated, "
    "– not applicable (e.g. G9 without synchronous replication) · result: ok when every check passed"
)


def render_summary(reports: list[ScenarioReport]) -> Table:
    """A rich table: one row per scenario with recovery times, counts and a mark per guarantee."""
    table = Table(title="chaos lab: scenarios", show_lines=False, caption=LEGEND, caption_justify="left")
    table.add_column("scenario")
    table.add_column("variant")
    table.add_column("wf", justify="right")
    table.add_column("fault→ckpt s", justify="right")
    table.add_column("drain s", justify="right")
    table.add_column("takeovers", justify="right")
    table.add_column("dup", justify="right")
    table.add_column("lost ack", justify="right")
    for gid in GUARANTEE_IDS:
        table.add_column(gid, justify="center")
    partial = any("partial_availability" in r.extra for r in reports)
    if partial:  # Citus worker-group faults: finish rate of the healthy groups' workflows, before -> during
        table.add_column("healthy wf/s before→during", justify="right")
    table.add_column("result")
    marks = {"pass": "[green]✓[/]", "fail": "[bold red]✗[/]", "n-a": "[dim]–[/]"}
    for r in reports:
        cells = []
        for gid in GUARANTEE_IDS:
            status = (r.guarantees.get(gid) or {}).get("status")
            cells.append(marks.get(status or "", "[dim]?[/]"))
        if partial:
            cells.append(_partial(r))
        table.add_row(r.name, r.variant, str(r.workflows), _fmt_s(r.fault_to_first_checkpoint_s), _fmt_s(r.drain_s),
                      str(r.takeovers), _dup(r), str(r.lost_acks), *cells, "[green]ok[/]" if r.ok else "[bold red]FAIL[/]")
    return table


def _dup(r: ScenarioReport) -> str:
    """Duplicates, with how many of them were transactional steps re-run after their transaction rolled back
    (nothing of the first run committed): ``7 (5 tx)``."""
    tx = ((r.extra.get("stats") or {}).get("duplicate_kinds") or {}).get("tx_rolled_back", 0)
    return f"{r.duplicates} ({tx} tx)" if tx else str(r.duplicates)


def _partial(r: ScenarioReport) -> str:
    """Partial availability of a worker-group fault: the healthy groups' workflows finished per second before
    the fault and while it lasted (chaos/test_citus_scenarios.py); ``—`` for other scenarios."""
    pa = r.extra.get("partial_availability")
    if not pa:
        return "—"
    h = pa.get("healthy") or {}
    return f"{h.get('finish_rate_before', 0):.1f}→{h.get('finish_rate_during', 0):.1f}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "scenario"


def _redact(text: str) -> str:
    """Hide passwords in any postgres URL inside ``text``."""
    import re

    return re.sub(r"postgres(?:ql)?://[^\s\"']+", lambda m: redact_url(m.group(0)), text)
