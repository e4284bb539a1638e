"""What a scenario run looks like in Allure (allure-pytest, when ``--alluredir`` is given).

Each scenario and port is its own Allure test: the port is a parameter, so historyId (which
allure-pytest derives from the full name and the parameters) and testCaseId (set here) differ per
port and Allure never shows two ports as retries of one test. Labels: epic = area, feature =
requirement, story = scenario, severity from the level. The steps read like the SMTP exchange;
the step that failed is marked failed (the error it carries is the short problem, the test's
message the headline, so the error is not shown twice).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Outcome
    from .model import Requirement


class _StepFailed(AssertionError):
    """Raised inside the Allure step that failed, so allure marks it failed; caught at once."""


def _test_case_id(scenario_id: str, port: str) -> str:
    return hashlib.md5(f"anypost-conformance:{scenario_id}[{port}]".encode()).hexdigest()


def severity(level: str) -> str:
    """MUST is critical: the contract is broken. SHOULD is minor: a warning unless --strict."""
    return "critical" if level == "MUST" else "minor"


def contract_link(rid: str, contract_url: str | None, requirements_file: Path | None) -> str:
    if contract_url:
        return f"{contract_url}#{rid}"
    if requirements_file is not None:
        return requirements_file.resolve().as_uri() + f"#{rid}"
    return f"#{rid}"


def attach(
    config: Any,
    outcome: Outcome,
    requirements: dict[str, Requirement],
    contract_url: str | None = None,
    requirements_file: Path | None = None,
) -> None:
    if not config.pluginmanager.hasplugin("allure_pytest"):
        return
    try:
        import allure
    except ImportError:
        return
    s = outcome.scenario
    dynamic: Any = allure.dynamic  # allure-pytest ships no type information
    dynamic.title(f"{s.title} [{outcome.port}]")
    dynamic.parameter("port", outcome.port)
    listener = config.pluginmanager.get_plugin("allure_listener")
    current = listener.allure_logger.get_test(None) if listener is not None else None
    if current is not None:
        current.testCaseId = _test_case_id(s.id, outcome.port)
    dynamic.epic(s.id.split("/")[0])
    dynamic.feature(*s.requirements)
    dynamic.story(s.id)
    dynamic.severity(severity(s.level.value))
    dynamic.tag(*s.tags, s.level.value)
    described = [
        f"**{s.id}** ({s.level.value}, {Path(s.location.file).name}:{s.location.line})",
        "",
    ]
    for rid in s.requirements:
        req = requirements.get(rid)
        described.append(
            f"- **{rid}** ({req.level.value if req else '?'}): {req.text if req else '?'}"
        )
        dynamic.link(contract_link(rid, contract_url, requirements_file), name=f"contract {rid}")
    dynamic.description("\n".join(described))
    for record in outcome.steps_run:
        title = f"{record.title} \u2192 {record.reply}"
        if record.verdict != "ok":
            title += f" ({record.verdict})"
        try:
            with allure.step(title):
                for line in record.lines:
                    with allure.step(line):
                        pass
                if record.verdict == "failed":
                    raise _StepFailed(_problems(outcome, record.title))
        except _StepFailed:
            pass
    allure.attach(
        outcome.transcript.render(),
        name="SMTP transcript",
        attachment_type=allure.attachment_type.TEXT,
    )


def _problems(outcome: Outcome, title: str) -> str:
    for failure in outcome.failures:
        return "; ".join(failure.problems)
    return title
