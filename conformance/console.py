"""What a person watching a run sees: a line per scenario and port as it finishes, grouped by
area; a line whenever the run waits on the target's auth-failure budget; and at the end a table
per requirement and the paths of every report.

Pure formatting over the plugin's records (plain dicts, see ``reporting.record``); the plugin
owns the terminal and calls in here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import Requirement

# The mark shown for each outcome, and the terminal colour the plugin gives it.
MARKS: dict[str, tuple[str, str]] = {
    "passed": ("PASS", "green"),
    "warned": ("WARN", "yellow"),
    "failed": ("FAIL", "red"),
    "blocked": ("BLOCKED", "red"),
    "known": ("KNOWN", "yellow"),
    "inconclusive": ("INCONCLUSIVE", "yellow"),
    "not verified": ("NOT VERIFIED", "cyan"),
    "error": ("ERROR", "red"),
}
_WIDTH = max(len(mark) for mark, _ in MARKS.values())


def outcome_of(record: dict[str, Any]) -> str:
    """The console's category of one scenario run: a verdict, or passed-with-warnings, or a
    failure the profile declares as a known deviation."""
    verdict = str(record["verdict"])
    deviation = record.get("deviation") or ""
    if verdict in ("failed", "blocked") and deviation.startswith("known"):
        return "known"
    if verdict == "passed" and record.get("should_failures"):
        return "warned"
    if verdict in ("failed", "blocked") and not record.get("fails_run", True):
        return "warned"  # a SHOULD-level scenario without --strict: a warning, not a failure
    return verdict if verdict in MARKS else "error"


def area_of(scenario_id: str) -> str:
    return scenario_id.split("/", 1)[0]


def scenario_line(record: dict[str, Any]) -> tuple[str, str]:
    """``FAIL  auth/bad-key [submission]  AUTH-4 AUTH-5  0.31s``, and its colour."""
    mark, colour = MARKS[outcome_of(record)]
    text = (
        f"  {mark:<{_WIDTH}}  {record['scenario']} [{record['port']}]"
        f"  {' '.join(record['requirements'])}  {record.get('duration', 0.0):.2f}s"
    )
    extra = record.get("reason") or ""
    if record.get("blocked_by"):
        text += f"  (blocked by {record['blocked_by']})"
    elif outcome_of(record) in ("not verified", "inconclusive") and extra:
        text += f"  ({_one_line(extra)})"
    return text, colour


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class RequirementTally:
    """How the scenario runs that check one requirement came out."""

    rid: str
    level: str
    passed: int = 0
    failed: int = 0  # failed and error runs
    warnings: int = 0  # passed runs with SHOULD expectations not met
    inconclusive: int = 0
    blocked: int = 0  # own runs blocked by another requirement's failure: not judged
    known: int = 0  # failures the profile declares as known deviations
    not_verified: list[str] = field(default_factory=list)  # the reasons

    judged: str = ""  # the requirement's verdict by the report's model, when given

    @property
    def verdict(self) -> str:
        if self.judged:
            return self.judged
        if self.failed:
            return "failed"
        if self.inconclusive:
            return "inconclusive"
        if self.known:
            return "known deviation"
        if self.passed:
            return "passed with warnings" if self.warnings else "passed"
        if self.not_verified:
            return "not verified"
        return "not covered"


def tally(
    records: Iterable[dict[str, Any]],
    requirements: dict[str, Requirement],
    judged: dict[str, str] | None = None,
) -> list[RequirementTally]:
    """One tally per requirement of the catalogue (and any a record names beyond it);
    ``judged`` gives each requirement's verdict as the reports grade it."""
    rows: dict[str, RequirementTally] = {
        rid: RequirementTally(rid, req.level.value, judged=(judged or {}).get(rid, ""))
        for rid, req in requirements.items()
    }
    for r in records:
        kind = outcome_of(r)
        for rid in r["requirements"]:
            row = rows.setdefault(rid, RequirementTally(rid, str(r.get("level", "?"))))
            if kind in ("failed", "error"):
                row.failed += 1
            elif kind == "passed":
                row.passed += 1
            elif kind == "warned":
                row.passed += 1
                row.warnings += 1
            elif kind == "inconclusive":
                row.inconclusive += 1
            elif kind == "blocked":
                row.blocked += 1
            elif kind == "known":
                row.known += 1
            else:
                reason = _one_line(r.get("reason") or "no reason given", 80)
                if reason not in row.not_verified:
                    row.not_verified.append(reason)
    return sorted(rows.values(), key=lambda row: _sort_key(row.rid))


def _sort_key(rid: str) -> tuple[str, int, str]:
    area, _, number = rid.partition("-")
    return (area, int(number), "") if number.isdigit() else (area, 0, number)


def requirement_table(rows: list[RequirementTally]) -> list[str]:
    """The end-of-run table: MUST passed/failed, SHOULD warnings, inconclusive, not verified."""
    header = f"{'requirement':<12} {'level':<6} {'verdict':<21} {'pass':>4} {'fail':>4} {'warn':>4} {'inc':>4} {'blk':>4}  not verified"
    lines = [header, "-" * len(header)]
    for row in rows:
        reasons = "; ".join(row.not_verified)
        lines.append(
            f"{row.rid:<12} {row.level:<6} {row.verdict:<21} {row.passed:>4} {row.failed:>4}"
            f" {row.warnings:>4} {row.inconclusive:>4} {row.blocked:>4}  {reasons}".rstrip()
        )
    return lines


def totals_line(records: Iterable[dict[str, Any]], interrupted: bool = False) -> str:
    counts: dict[str, int] = {}
    for r in records:
        kind = outcome_of(r)
        counts[kind] = counts.get(kind, 0) + 1
    order = [k for k in MARKS if k in counts]
    text = ", ".join(f"{counts[k]} {k}" for k in order) or "no scenario ran"
    return ("INTERRUPTED: " if interrupted else "") + text


def wait_line(seconds: float, why: str, who: str = "") -> str:
    """The notice shown while a scenario waits on the target's auth-failure budget."""
    return f"  ... waiting {seconds:.0f}s for {why}" + (f" ({who})" if who else "")


def stability_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """Per scenario and port with --repeat: how many runs gave each verdict."""
    lines = []
    for r in records:
        runs = r.get("repeat")
        if not runs:
            continue
        counts: dict[str, int] = {}
        for verdict in runs:
            counts[verdict] = counts.get(verdict, 0) + 1
        stable = len(counts) == 1
        detail = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        lines.append(
            f"  {'stable' if stable else 'FLAKY':<6}  {r['scenario']} [{r['port']}]  "
            f"{len(runs)} runs: {detail}"
        )
    return lines
