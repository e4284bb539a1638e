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
from .model import Requirement, Verdict, worst

REPORT_SCHEMA_VERSION = 1


def _failure(f: Failure) -> dict[str, Any]:
    found = {
        "step": f.step,
        "location": f.location,
        "level": f.level.value,
        "problems": list(f.problems),
    }
    if f.requirement:
        found["requirement"] = f.requirement  # a wire rule broken on the way (RFC-9...)
    return found


def record(outcome: Outcome, deviation: str | None = None, strict: bool = False) -> dict[str, Any]:
    """One scenario run as JSON: the verdict model of ``model.Verdict`` made explicit.

    ``verdict`` is the scenario's verdict; ``judged_level`` the level of what decided it;
    ``blocked_by`` the requirement a blocked run is charged to; ``fails_run`` whether it makes
    the run exit 1 (``model.fails_run``, with the run's --strict).
    """
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
        "judged_level": outcome.judged_level.value,
        "blocked_by": outcome.blocked_by,
        "charged_to": outcome.charged_to,
        "unfinished": outcome.unfinished,
        "fails_run": outcome.fails_run(strict),
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
    """One row per requirement.

    A requirement's verdict is the worst verdict (``model.VERDICT_ORDER``) of the runs that
    judge it at its own level: its scenarios of the same level, and the runs of other
    scenarios blocked by it (a precondition or incidental check of this requirement failed
    there: failed). An own run that was blocked makes it "blocked" (not judged), never
    "failed". A scenario of another level (a SHOULD scenario naming a MUST requirement) and a
    ``should:`` expectation that was not met only add ``warnings``; a blocked run is never
    charged to the scenario's own requirements. "not covered": no run judged it.
    """
    rows = []
    records = list(records)
    for rid, req in sorted(requirements.items(), key=lambda kv: _sort_key(kv[0])):
        level = req.level.value
        own = [r for r in records if rid in r["requirements"] and r["level"] == level]
        blocking = [
            r
            for r in records
            if r.get("blocked_by") == rid and r.get("judged_level", "MUST") == level
        ]
        # A breach of a wire rule (RFC-9...) fails that rule in whichever scenario it happened.
        wire = [r for r in records if _names(r, rid)]
        verdicts = (
            [_own_verdict(r, rid) for r in own]
            + [Verdict.FAILED for _ in blocking]
            + [Verdict.FAILED for _ in wire]
        )
        found = worst(verdicts)
        named = [r for r in records if rid in r["requirements"] or r in wire]
        warnings = sorted(
            {
                _run(r)
                for r in named
                if (r["level"] != level and r["verdict"] != Verdict.PASSED.value)
                or r["should_failures"]
            }
        )
        rows.append(
            {
                "id": rid,
                "level": level,
                "text": req.text,
                "verdict": "not covered" if found is None else found.value,
                "scenarios": sorted({_run(r) for r in named}),
                "blocked": sorted(
                    {_run(r) for r in named if r["verdict"] == Verdict.BLOCKED.value}
                ),
                "blocking": sorted({_run(r) for r in blocking}),
                "warnings": warnings,
            }
        )
    return rows


def _names(record: dict[str, Any], rid: str) -> bool:
    """The record broke the wire rule ``rid`` on the way (any scenario can)."""
    return any(f.get("requirement") == rid for f in record["failures"] + record["should_failures"])


def _own_verdict(record: dict[str, Any], rid: str) -> Verdict:
    """A record's verdict for one of its own requirements. A run that failed only by breaches
    of wire rules it does not name (each charged to its rule) passed as far as they go; a
    scenario that names the rule (the smuggling scenarios name RFC-12: a smuggled command's
    reply is a reply too many) owns its breaches. A failure charged to another of the
    scenario's requirements (``charged_to``) leaves this one passed when it came at the last
    step, blocked when steps were left."""
    charged = record.get("charged_to")
    if record["verdict"] == Verdict.FAILED.value and charged and charged != rid:
        return Verdict.BLOCKED if record.get("unfinished", True) else Verdict.PASSED
    found = record["failures"] + record["should_failures"]
    elsewhere = [f for f in found if f.get("requirement") not in (None, *record["requirements"])]
    if record["verdict"] == Verdict.FAILED.value and found and len(elsewhere) == len(found):
        return Verdict.PASSED
    return Verdict(record["verdict"])


def _run(r: dict[str, Any]) -> str:
    return f"{r['scenario']}[{r['port']}]"


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
