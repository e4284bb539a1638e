"""``anypost-conformance list``: the catalogue's scenarios, tags and requirements, filtered; and
the catalogue's identity (file count and digest) that ``--version`` and the reports show."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .loader import find_scenario_files, load_scenarios
from .model import Requirement, Scenario
from .requirements import find_requirements, load_requirements


@dataclass
class Catalogue:
    scenarios: list[Scenario]
    requirements: dict[str, Requirement]
    roots: dict[Path, Path]  # scenario file -> the folder of its requirements.yaml

    @property
    def digest(self) -> str:
        return catalogue_digest({str(f): str(r) for f, r in self.roots.items()})


def catalogue_digest(files: dict[str, str]) -> str:
    """sha256 (16 hex digits) over each scenario file's path under its root and its content:
    the same catalogue gives the same digest on any machine."""
    digest = hashlib.sha256()
    for name in sorted(files, key=lambda n: Path(n).relative_to(files[n]).as_posix()):
        digest.update(Path(name).relative_to(files[name]).as_posix().encode() + b"\0")
        digest.update(Path(name).read_bytes())
    return digest.hexdigest()[:16]


def load_catalogue(paths: list[Path]) -> Catalogue:
    """Every scenario under ``paths``; raises ScenarioError as check-scenarios reports it."""
    scenarios: list[Scenario] = []
    requirements: dict[str, Requirement] = {}
    roots: dict[Path, Path] = {}
    for file in find_scenario_files(paths):
        req_file = find_requirements(file.parent)
        reqs = load_requirements(req_file)
        requirements.update(reqs)
        roots[file] = req_file.parent
        scenarios.extend(load_scenarios(file, reqs))
    return Catalogue(scenarios, requirements, roots)


def select(
    scenarios: list[Scenario],
    tags: list[str],
    requirements: list[str],
    text: str | None,
    area: list[str],
) -> list[Scenario]:
    """The same selection as ``run --tag/--requirement`` (any of each), plus a substring of the
    id or title, plus the area (the id's first segment)."""
    chosen = []
    for s in scenarios:
        if tags and not set(tags) & set(s.tags):
            continue
        if requirements and not set(requirements) & set(s.requirements):
            continue
        if area and s.id.split("/", 1)[0] not in area:
            continue
        if text and text.lower() not in (s.id + " " + s.title).lower():
            continue
        chosen.append(s)
    return chosen


def scenario_lines(scenarios: list[Scenario]) -> list[str]:
    width = max((len(s.id) for s in scenarios), default=10)
    lines = []
    for s in sorted(scenarios, key=lambda s: s.id):
        flags = " destructive" if s.destructive else ""
        lines.append(
            f"{s.id:<{width}}  {s.level.value:<6}  {','.join(s.requirements):<16}  "
            f"[{', '.join(s.tags)}]{flags}"
        )
    return lines


def tag_lines(scenarios: list[Scenario]) -> list[str]:
    counts: dict[str, int] = {}
    for s in scenarios:
        for tag in s.tags:
            counts[tag] = counts.get(tag, 0) + 1
    return [f"{tag:<24} {n} scenario(s)" for tag, n in sorted(counts.items())]


def requirement_lines(
    scenarios: list[Scenario],
    requirements: dict[str, Requirement],
    only: list[str],
    covered_only: bool = False,
) -> list[str]:
    """Each requirement with how many of ``scenarios`` check it; ``covered_only`` (when the
    scenarios were filtered) leaves out the requirements none of them checks."""
    covering: dict[str, int] = {}
    for s in scenarios:
        for rid in s.requirements:
            covering[rid] = covering.get(rid, 0) + 1
    lines = []
    for rid, req in sorted(requirements.items(), key=lambda kv: _sort_key(kv[0])):
        if only and rid not in only:
            continue
        n = covering.get(rid, 0)
        if covered_only and not n:
            continue
        lines.append(
            f"{rid:<12} {req.level.value:<6} {n:>3} scenario(s)  {' '.join(req.text.split())}"
        )
    return lines


def _sort_key(rid: str) -> tuple[str, int, str]:
    area, _, number = rid.partition("-")
    return (area, int(number), "") if number.isdigit() else (area, 0, number)
