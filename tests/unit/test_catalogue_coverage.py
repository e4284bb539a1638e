"""The catalogue covers the contract: every sentence has a requirement (or is a heading or a
link, said so), every requirement a sentence or an RFC clause, and every requirement a scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.contract import load_sentence_map, sentences
from conformance.loader import load_scenarios, variable_transforms
from conformance.requirements import load_requirements
from conformance.variables import TRANSFORMS

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "scenarios" / "contract" / "anypost-smtp-submission.txt"
SENTENCES = ROOT / "scenarios" / "contract" / "sentences.yaml"
REQUIREMENTS = ROOT / "scenarios" / "requirements.yaml"
# The published contract, where the checkout has the shared folder beside it (CI does).
PUBLISHED = [
    ROOT.parent / "shared" / "spec" / CONTRACT.name,
    Path("/work/shared/spec") / CONTRACT.name,
]


def _scenario_requirements() -> dict[str, set[str]]:
    named: dict[str, set[str]] = {}
    for path in sorted((ROOT / "scenarios").rglob("*.scenario.yaml")):
        for scenario in load_scenarios(path):
            for rid in scenario.requirements:
                named.setdefault(rid, set()).add(scenario.id)
    return named


def test_contract_copy_is_the_published_contract() -> None:
    published = next((p for p in PUBLISHED if p.is_file()), None)
    if published is None:
        pytest.skip("the published contract is not beside this checkout")
    assert CONTRACT.read_text(encoding="utf-8") == published.read_text(encoding="utf-8")


def test_every_sentence_of_the_contract_is_mapped_in_order() -> None:
    text = sentences(CONTRACT.read_text(encoding="utf-8"))
    mapped = [m.sentence for m in load_sentence_map(SENTENCES)]
    missing = [s for s in text if s not in mapped]
    stale = [s for s in mapped if s not in text]
    assert not missing, f"contract sentences with no entry in {SENTENCES.name}: {missing}"
    assert not stale, f"entries of {SENTENCES.name} that are not in the contract: {stale}"
    assert mapped == text


def test_every_mapped_requirement_exists_and_only_headings_and_links_are_informative() -> None:
    requirements = load_requirements(REQUIREMENTS)
    for entry in load_sentence_map(SENTENCES):
        for rid in entry.requirements:
            assert rid in requirements, f"{entry.sentence!r} names unknown requirement {rid}"
        if entry.informative is not None:
            # A statement of behaviour never hides here: informative entries are short lines
            # (headings, table heads, links) or say why the HTTP API is outside the harness.
            short = len(entry.sentence) < 40 or entry.sentence.startswith("See ")
            assert short or "HTTP API" in entry.informative, entry


def test_every_contract_requirement_comes_from_a_sentence() -> None:
    cited = {rid for e in load_sentence_map(SENTENCES) for rid in e.requirements}
    requirements = load_requirements(REQUIREMENTS)
    orphans = sorted(r for r in requirements if not r.startswith("RFC-") and r not in cited)
    assert not orphans, f"requirements no contract sentence maps to: {orphans}"


def test_every_requirement_has_a_scenario() -> None:
    named = _scenario_requirements()
    requirements = load_requirements(REQUIREMENTS)
    untested = sorted(set(requirements) - set(named))
    assert not untested, f"requirements no scenario checks: {untested}"
    unknown = sorted(set(named) - set(requirements))
    assert not unknown, f"scenarios name requirements that are not listed: {unknown}"


def test_variable_transforms_agree_with_the_schema() -> None:
    assert sorted(TRANSFORMS) == sorted(variable_transforms())
