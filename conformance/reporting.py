"""Conformance reports: one record per scenario run, and a report per requirement.

Records are plain JSON-able dicts so pytest-xdist can ship them from workers to the controller.
Every text in them went through the transcript's redactor before it got here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__
from .engine import Failure, Outcome
from .model import Requirement

REPORT_SCHEMA_VERSION = 1


def _failure(f: Failure) -> dict[str, Any]:
    return {
        "step": f.step,
        "location": f.location,
        "level": f.level.value,
        "problems": list(f.problems),
    }


def record(outcome: Outcome, deviation: str | None = None) -> dict[str, Any]:
    s = outcome.scenario
    redact = outcome.transcript.redact
    return {
        "scenario": s.id,
        "title": s.title,
        "port": outcome.port,
        "level": s.level.value,
        "requirements": list(s.requirements),
        "tags": list(s.tags),
        "destructive": s.destructive,
        "location": str(s.location),
        "verdict": outcome.verdict.value,
        "reason": redact(outcome.reason),
        "deviation": deviation,
        "failures": [_failure(f) for f in outcome.failures],
        "should_failures": [_failure(f) for f in outcome.should_failures],
        "steps": [
            {"step": r.title, "verdict": r.verdict, "reply": redact(r.reply)}
            for r in outcome.steps_run
        ],
        "duration": round(outcome.duration, 3),
        "transcript": outcome.transcript.render(),
    }


def by_requirement(
    records: Iterable[dict[str, Any]], requirements: dict[str, Requirement]
) -> list[dict[str, Any]]:
    rows = []
    records = list(records)
    for rid, req in sorted(requirements.items(), key=lambda kv: _sort_key(kv[0])):
        mine = [r for r in records if rid in r["requirements"]]
        verdicts = {r["verdict"] for r in mine}
        if not mine:
            verdict = "not covered"
        elif "failed" in verdicts or "error" in verdicts:
            verdict = "failed"
        elif "inconclusive" in verdicts:
            verdict = "inconclusive"
        elif verdicts == {"not verified"}:
            verdict = "not verified"
        elif "passed" in verdicts and any(r["should_failures"] for r in mine):
            verdict = "passed with warnings"
        else:
            verdict = "passed"
        rows.append(
            {
                "id": rid,
                "level": req.level.value,
                "text": req.text,
                "verdict": verdict,
                "scenarios": sorted({f"{r['scenario']}[{r['port']}]" for r in mine}),
            }
        )
    return rows


def _sort_key(rid: str) -> tuple[str, int]:
    area, _, number = rid.partition("-")
    return area, int(number) if number.isdigit() else 0


def write_reports(
    folder: Path,
    records: list[dict[str, Any]],
    requirements: dict[str, Requirement],
    target: dict[str, Any],
    run: dict[str, Any] | None = None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["scenario"], r["port"]))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "harness": {"name": "anypost-conformance", "version": __version__},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": target,
        "summary": counts,
        "requirements": by_requirement(records, requirements),
        "scenarios": records,
    }
    if run is not None:
        document["run"] = run
    (folder / "conformance.json").write_text(json.dumps(document, indent=2) + "\n")
    # Issue 10: the documents people read are rendered in their own modules.
    from .report_html import to_html
    from .report_md import markdown

    (folder / "conformance.md").write_text(markdown(document))
    (folder / "conformance.html").write_text(to_html(document))
