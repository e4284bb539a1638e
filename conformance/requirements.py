"""The requirement catalogue: stable ids, level, and the quoted sentence of the contract."""

from __future__ import annotations

from pathlib import Path

from .errors import ScenarioError
from .model import Level, Requirement
from .yamlsrc import SourceList, SourceMap, load_yaml

# The catalogue's own requirements, beside the bundled scenarios.
BUNDLED = Path(__file__).resolve().parent.parent / "scenarios" / "requirements.yaml"


def find_requirements(start: Path) -> Path:
    """The requirements.yaml that governs scenario files in ``start``: the nearest one in it or
    a parent folder, else the bundled catalogue's. A scenario file anywhere is checked against
    one: an unknown requirement id is never let through because of where the file lives."""
    for folder in [start, *start.resolve().parents]:
        candidate = folder / "requirements.yaml"
        if candidate.is_file():
            return candidate
    if BUNDLED.is_file():
        return BUNDLED
    raise ScenarioError(
        f"no requirements.yaml in {start} or a parent folder, and none bundled at {BUNDLED}: "
        "put the requirement catalogue beside the scenarios"
    )


def load_requirements(path: Path) -> dict[str, Requirement]:
    doc = load_yaml(path, ScenarioError)
    if not isinstance(doc, SourceMap) or not isinstance(doc.get("requirements"), SourceList):
        raise ScenarioError(
            "expected a mapping with a 'requirements' list", getattr(doc, "location", None)
        )
    result: dict[str, Requirement] = {}
    for item, location in zip(doc["requirements"], doc["requirements"].item_locations, strict=True):
        if not isinstance(item, dict) or set(item) != {"id", "level", "text"}:
            raise ScenarioError("each requirement needs exactly id, level and text", location)
        rid = str(item["id"])
        if rid in result:
            raise ScenarioError(f"requirement {rid} is defined twice", location)
        try:
            level = Level(item["level"])
        except ValueError:
            raise ScenarioError(
                f"level {item['level']!r} is not MUST or SHOULD", location
            ) from None
        result[rid] = Requirement(rid, level, str(item["text"]).strip(), rid.split("-")[0])
    return result
