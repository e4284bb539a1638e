"""The console of ``anypost-conformance run`` (``--conformance-console`` in plain pytest).

A pytest plugin object the main plugin registers in the controller process: it replaces
pytest's dots with a line per scenario and port (``console.scenario_line``), says when and why
the run waits on the target's auth-failure budget, and ends with the table per requirement and
the paths of every report. The formatting itself lives in ``console``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import console
from .budget import TargetBudget
from .model import Requirement
from .plugin import RECORD_KEY

_POLL = 0.5  # seconds between looks at the budget's state file for waits under way


def record_of(report: pytest.TestReport) -> dict[str, Any] | None:
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            loaded: dict[str, Any] = json.loads(str(value))
            return loaded
    return None


def _is_scenario(report: pytest.TestReport) -> bool:
    return ".scenario.yaml::" in report.nodeid


class ConsoleReporter:
    def __init__(
        self,
        config: pytest.Config,
        records: list[dict[str, Any]],
        requirements: Callable[[], dict[str, Requirement]],
        budget: TargetBudget | None,
    ) -> None:
        self.config = config
        self.records = records
        self.requirements = requirements
        self.budget = budget
        self.area = ""
        self.interrupted = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def _tr(self) -> Any:
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def _write(self, line: str, **markup: bool) -> None:
        tr = self._tr
        if tr is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        # A budget wait is announced while a test runs, when pytest captures the output: the
        # line goes around the capture (as pytest's live logging does), to the terminal.
        suspended = (
            capture.global_and_fixture_disabled()
            if capture is not None
            else contextlib.nullcontext()
        )
        with self._lock, suspended:
            tr.ensure_newline()
            tr.write_line(line, **markup)
            tr.flush()  # seen as it happens, also through a pipe (CI logs)

    # -- pytest's dots give way to our lines -------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, str] | None:
        if not isinstance(report, pytest.TestReport) or not _is_scenario(report):
            return None
        if report.when == "call" or (report.when == "setup" and report.skipped):
            return ("xfailed" if hasattr(report, "wasxfail") else report.outcome), "", ""
        return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not _is_scenario(report):
            return
        record = record_of(report)
        if record is None:
            if report.failed:  # a harness error before the scenario produced a record
                self._area(report.nodeid.split("::")[-1])
                self._write(f"  {'ERROR':<12}  {report.nodeid} ({report.when})", red=True)
            return
        if report.when != "call" and not (report.when == "setup" and report.skipped):
            return
        self._area(record["scenario"])
        text, colour = console.scenario_line(record)
        self._write(text, **{colour: True})
        if self.config.get_verbosity() > 0:
            for f in record["failures"] + record["should_failures"]:
                problems = "; ".join(f["problems"])
                self._write(f"      {f['level']} step '{f['step']}' at {f['location']}: {problems}")

    def _area(self, scenario_id: str) -> None:
        area = console.area_of(scenario_id)
        if area != self.area:
            self.area = area
            self._write(f"{area}", bold=True)

    # -- waits on the auth-failure budget --------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        tr = self._tr
        if tr is not None:
            tr.showfspath = False  # our lines name the scenario; no file names with dots after
        if self.budget is None:
            return
        self._watcher = threading.Thread(
            target=self._watch, name="anypost-budget-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self) -> None:
        assert self.budget is not None
        seen: set[tuple[str, float]] = set()
        while not self._stop.wait(_POLL):
            try:
                waits = self.budget.waits()
            except (OSError, ValueError):
                continue
            for wait in waits:
                key = (str(wait.get("who", "")), float(wait["until"]))
                if key in seen:
                    continue
                seen.add(key)
                left = float(wait["until"]) - time.time()
                self._write(console.wait_line(left, str(wait.get("why", "")), key[0]), yellow=True)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.stop()

    # -- the end of the run ------------------------------------------------------------------------
    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        interrupted = self.interrupted or exitstatus == pytest.ExitCode.INTERRUPTED
        terminalreporter.section("conformance per requirement")
        from .reporting import by_requirement

        requirements = self.requirements()
        judged = {row["id"]: row["verdict"] for row in by_requirement(self.records, requirements)}
        for line in console.requirement_table(console.tally(self.records, requirements, judged)):
            terminalreporter.line(line)
        stability = console.stability_lines(self.records)
        if stability:
            terminalreporter.section("stability (--repeat)")
            for line in stability:
                terminalreporter.line(line)
        terminalreporter.section("reports")
        for path in report_paths(config):
            terminalreporter.line(f"  {path}")
        terminalreporter.line(
            console.totals_line(self.records, interrupted), bold=True, red=interrupted
        )


def report_paths(config: pytest.Config) -> list[str]:
    """Every file or folder this run wrote, as the user will look for them."""
    paths: list[str] = []
    xml = getattr(config.option, "xmlpath", None)
    if xml:
        paths.append(str(xml))
    allure = getattr(config.option, "allure_report_dir", None)
    if allure:
        paths.append(f"{allure}/")
    folder = config.getoption("--conformance-report-dir", None)
    if folder:
        for name in (
            "conformance.json",
            "conformance.md",
            "conformance.html",
            "reference-server.log",
            "bundled-profile.yaml",
        ):
            if (Path(folder) / name).exists():
                paths.append(str(Path(folder) / name))
    return paths
