"""The contract's text cut into sentences, and the map from each sentence to its requirements.

``scenarios/contract/anypost-smtp-submission.txt`` is the contract as published;
``scenarios/contract/sentences.yaml`` gives every sentence of it either the requirement ids that
test it or, for headings and links only, why nothing can be tested (``informative``). The
coverage test holds the two, the requirements and the scenarios together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ScenarioError
from .yamlsrc import SourceList, SourceMap, load_yaml

# A sentence ends at . ! or ? followed by white space and a capital, a digit or a quote; a line
# of the published page (a heading, a table row, a list item) is never joined to the next.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            found += [s for s in _SENTENCE_END.split(line) if s]
    return found


@dataclass(frozen=True)
class SentenceMap:
    sentence: str
    requirements: tuple[str, ...] = ()
    informative: str | None = None


def load_sentence_map(path: Path) -> list[SentenceMap]:
    doc = load_yaml(path, ScenarioError)
    if not isinstance(doc, SourceMap) or not isinstance(doc.get("sentences"), SourceList):
        raise ScenarioError(
            "expected a mapping with a 'sentences' list", getattr(doc, "location", None)
        )
    result = []
    for item, location in zip(doc["sentences"], doc["sentences"].item_locations, strict=True):
        if not isinstance(item, dict) or "sentence" not in item:
            raise ScenarioError("each entry needs a sentence", location)
        requirements = tuple(str(r) for r in item.get("requirements") or ())
        informative = item.get("informative")
        if bool(requirements) == bool(informative):
            raise ScenarioError(
                "each sentence needs either requirements or an informative reason, not both",
                location,
            )
        result.append(SentenceMap(str(item["sentence"]), requirements, informative))
    return result
