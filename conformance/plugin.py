"""The pytest plugin: collects ``*.scenario.yaml`` files, one item per scenario and port.

This is the only module that imports pytest; it is loaded in every pytest run once installed,
so it imports the rest of the harness lazily.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Generator, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .engine import Outcome
    from .model import Profile, Requirement, Scenario

SUFFIX = ".scenario.yaml"
LONG_TRANSCRIPT = 60  # entries; past this a failure shows the part around the failing step
RECORD_KEY = "anypost_conformance_record"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anypost-conformance", "Anypost SMTP conformance")
    group.addoption(
        "--target", metavar="PROFILE", help="target profile (YAML) to run scenarios against"
    )
    group.addoption(
        "--include-destructive",
        action="store_true",
        help="also run scenarios that change the target's state (trip the auth-failure block)",
    )
    group.addoption(
        "--conformance-strict",
        action="store_true",
        help="SHOULD-level expectations fail scenarios instead of warning",
    )
    group.addoption(
        "--conformance-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="run only scenarios with this tag (repeatable)",
    )
    group.addoption(
        "--conformance-requirement",
        action="append",
        default=[],
        metavar="ID",
        help="run only scenarios checking this requirement (repeatable)",
    )
    group.addoption(
        "--conformance-report-dir", metavar="DIR", help="write conformance.json/.md/.html here"
    )
    group.addoption(
        "--allow-missing-keys",
        action="store_true",
        help="run although key variables of the profile are unset: what needs them is not "
        "verified, and the summary says how much",
    )
    # Bounds of the property-based (generate) steps; they win over the profile's generated:.
    group.addoption("--conformance-examples", type=int, metavar="N", help="examples per property")
    group.addoption(
        "--conformance-seconds", type=float, metavar="S", help="seconds of generation per property"
    )
    group.addoption("--conformance-seed", type=int, metavar="N", help="hypothesis seed to reuse")
    # -- issue 10: presentation -----------------------------------------------------------------
    group.addoption(
        "--conformance-console",
        action="store_true",
        help="a line per scenario and port, budget waits, and a table per requirement at the end",
    )
    group.addoption(
        "--conformance-contract-url",
        metavar="URL",
        help="where the contract is published; Allure links each requirement to URL#ID",
    )
    group.addoption(
        "--conformance-lanes",
        action="store_true",
        help="with -n: the scenarios that may fail a login run in one lane that starts first",
    )
    group.addoption(
        "--conformance-repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each scenario N times and report its stability",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "destructive: changes the target's state for the caller")
    target = config.getoption("--target")
    if not target:
        return
    from .errors import ProfileError
    from .loader import load_profile

    try:
        profile = load_profile(Path(target))
    except ProfileError as exc:
        raise pytest.UsageError(f"invalid target profile:\n{exc}") from None
    config.stash[_PROFILE] = profile
    for option, variable in (
        ("--conformance-examples", "ANYPOST_CONFORMANCE_EXAMPLES"),
        ("--conformance-seconds", "ANYPOST_CONFORMANCE_SECONDS"),
        ("--conformance-seed", "ANYPOST_CONFORMANCE_SEED"),
    ):
        value = config.getoption(option)
        if value is not None:
            os.environ[variable] = str(value)  # read by every worker's engine
    os.environ.setdefault("ANYPOST_CONFORMANCE_RUN", uuid.uuid4().hex)
    if not hasattr(config, "workerinput"):
        _check_keys(profile, bool(config.getoption("--allow-missing-keys")))
        _check_reachable(profile)
        _RECORD_SINK.clear()  # one session's records (pytester may run several in a process)
        if profile.observer is not None and profile.observer["kind"] == "sink":
            _start_sink(config, profile.observer)
        _presentation(config, profile)


def _presentation(config: pytest.Config, profile: Profile) -> None:
    """Issue 10: the console, SIGTERM as Ctrl-C, and what the reports say about the target."""
    import signal
    import threading

    from .engine import budget_for
    from .plugin_console import ConsoleReporter
    from .probe import probe_target

    if threading.current_thread() is threading.main_thread():
        # SIGTERM stops the run as Ctrl-C does: sessions end with QUIT, reports are written.
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    if config.getoption("--conformance-report-dir"):
        config.stash[_PROBE] = probe_target(profile)
    if config.getoption("--conformance-console"):
        reporter = ConsoleReporter(
            config, _RECORD_SINK, lambda: _run_requirements(config), budget_for(profile)
        )
        config.pluginmanager.register(reporter, "anypost-console")
        config.stash[_CONSOLE] = reporter


_SINK = pytest.StashKey[Any]()
_CONSOLE = pytest.StashKey[Any]()
_PROBE = pytest.StashKey[dict[str, Any]]()
_CATALOGUE = pytest.StashKey[dict[str, str]]()  # scenario file -> its scenario root


def _start_sink(config: pytest.Config, observer: dict[str, str]) -> None:
    import shutil

    from .sink import CaptureSink

    folder = Path(observer["path"])
    shutil.rmtree(folder, ignore_errors=True)  # copies of an earlier run are not this run's
    sink = CaptureSink(folder, observer["host"], int(observer["port"]))
    try:
        sink.start()
    except OSError as exc:
        raise pytest.UsageError(
            f"cannot run the capture sink on {observer['host']}:{observer['port']}: {exc.strerror or exc}"
        ) from None
    config.stash[_SINK] = sink


def pytest_unconfigure(config: pytest.Config) -> None:
    sink = config.stash.get(_SINK, None)
    if sink is not None:
        sink.stop()
    console = config.stash.get(_CONSOLE, None)
    if console is not None:
        console.stop()


_PROFILE = pytest.StashKey["Profile"]()
_REQUIREMENTS = pytest.StashKey[dict[str, "Requirement"]]()


def unset_key_variables(profile: Profile) -> list[str]:
    """The environment variables the profile names for keys that are unset or empty."""
    return sorted(
        f"{key.env} (key role {key.role})"
        for key in profile.keys.values()
        if key.env and not os.environ.get(key.env)
    )


def _check_keys(profile: Profile, allow_missing: bool) -> None:
    """No false green: a run without its keys would skip most of the catalogue and exit 0.
    Checked before any connection."""
    unset = unset_key_variables(profile)
    if unset and not allow_missing:
        raise pytest.UsageError(
            f"key variables of {profile.file} are not set: {', '.join(unset)}. Export them, or "
            "pass --allow-missing-keys to run only what can be verified without them (the "
            "summary then says how much was not verified)"
        )


def _check_reachable(profile: Profile) -> None:
    """Fail fast (exit 2 from the CLI) when the target cannot even be reached."""
    for name, port in profile.ports.items():
        wait = min(profile.timeout, 10)
        try:
            with socket.create_connection((profile.host, port), timeout=wait) as conn:
                # A listener that never greets would cost every scenario a timeout: a run of
                # timeouts is no verdict on the contract. Any first bytes will do (a 421 too).
                greeted = conn.recv(1)
        except TimeoutError:
            raise pytest.UsageError(
                f"target unresponsive: {profile.host}:{port} (port {name}) from {profile.file} "
                f"accepted the connection but sent no greeting within {wait:g}s. Is this an SMTP "
                "server, and is the profile's port right?"
            ) from None
        except OSError as exc:
            raise pytest.UsageError(
                f"target unreachable: cannot connect to {profile.host}:{port} (port {name}) from "
                f"{profile.file}: {exc.strerror or exc}. Is the server running, and is the profile right?"
            ) from None
        if not greeted:
            raise pytest.UsageError(
                f"target unresponsive: {profile.host}:{port} (port {name}) from {profile.file} "
                "closed the connection without a greeting. Is this an SMTP server, and is the "
                "profile's port right?"
            )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIX):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFileError(Exception):
    pass


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from .errors import ScenarioError
        from .loader import load_scenarios
        from .requirements import find_requirements, load_requirements

        try:
            requirements = load_requirements(find_requirements(self.path.parent))
            scenarios = load_scenarios(self.path, requirements)
        except ScenarioError as exc:
            raise ScenarioFileError(str(exc)) from None
        known: dict[str, Requirement] = self.config.stash.get(_REQUIREMENTS, {})
        self.config.stash[_REQUIREMENTS] = {**known, **requirements}
        # The catalogue's identity for the reports: each file and its scenario root.
        catalogue: dict[str, str] = self.config.stash.setdefault(_CATALOGUE, {})
        catalogue[str(self.path)] = str(find_requirements(self.path.parent).parent)
        profile = self.config.stash.get(_PROFILE, None)
        if profile is None:
            raise ScenarioFileError(
                "no target: give --target PROFILE, or run `anypost-conformance run` to test the "
                "bundled reference server"
            )
        for scenario in scenarios:
            for port in scenario.ports or tuple(profile.ports):
                item = ScenarioItem.from_parent(
                    self, name=f"{scenario.id}[{port}]", scenario=scenario, port=port
                )
                item.extra_keyword_matches.update(scenario.tags)
                item.extra_keyword_matches.update(scenario.requirements)
                if scenario.destructive:
                    item.add_marker(pytest.mark.destructive)
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFileError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


class ScenarioFailed(AssertionError):
    """The target did not do what the contract says: a failed test (red in Allure)."""

    def __init__(self, text: str, headline: str = "") -> None:
        super().__init__(headline or text)
        self.text = text


class HarnessError(Exception):
    """The harness failed (the error verdict): a broken test in Allure, not the target's fault."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, port: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.port = port

    def runtest(self) -> None:
        from .engine import run_scenario
        from .model import Verdict
        from .reporting import record

        profile = self.config.stash[_PROFILE]
        strict = bool(self.config.getoption("--conformance-strict"))
        repeat = max(1, int(self.config.getoption("--conformance-repeat") or 1))
        outcomes = [
            asyncio.run(
                run_scenario(
                    self.scenario,
                    profile,
                    self.port,
                    include_destructive=bool(self.config.getoption("--include-destructive")),
                    strict=strict,
                )
            )
            for _ in range(repeat)
        ]
        verdicts = [o.verdict.value for o in outcomes]
        # With --repeat, a run that did not pass is the one reported (a flaky pass is no pass).
        outcome = next((o for o in outcomes if o.verdict is not Verdict.PASSED), outcomes[-1])
        deviation = profile.deviation_for(self.scenario.id)
        active = deviation is not None and deviation.expires >= date.today()
        note = None
        if deviation is not None and not active:
            note = f"expired deviation (until {deviation.expires}), no longer excused: {deviation.reason}"
        if active and deviation is not None:
            if outcome.verdict is Verdict.PASSED:
                note = (
                    f"stale deviation: passes now, remove it from the profile ({deviation.reason})"
                )
            elif outcome.verdict in (Verdict.FAILED, Verdict.BLOCKED):
                # Blocked too: a deviation of the requirement charged (no ids= at all, say)
                # stops scenarios that only check it in passing.
                note = f"known deviation until {deviation.expires}: {deviation.reason}"
        data = record(outcome, note, strict)
        if repeat > 1:
            data["repeat"] = verdicts
        self.user_properties.append((RECORD_KEY, json.dumps(data)))
        self.user_properties.append(("verdict", outcome.verdict.value))
        if outcome.blocked_by:
            self.user_properties.append(("blocked_by", outcome.blocked_by))
        self.user_properties.append(("requirements", " ".join(self.scenario.requirements)))
        self.user_properties.append(("level", self.scenario.level.value))
        from .allure_report import attach
        from .requirements import find_requirements

        attach(
            self.config,
            outcome,
            self.config.stash.get(_REQUIREMENTS, {}),
            self.config.getoption("--conformance-contract-url"),
            find_requirements(self.path.parent),
        )
        if outcome.verdict is Verdict.NOT_VERIFIED:
            pytest.skip(f"not verified: {outcome.reason}")
        if note is not None and note.startswith("known"):
            pytest.skip(note)
        text = _failure_text(outcome, self.config.stash.get(_REQUIREMENTS, {}))
        if outcome.verdict is Verdict.ERROR:
            raise HarnessError(text)
        if outcome.fails_run(strict):
            raise ScenarioFailed(text, _headline(outcome))
        if outcome.verdict is not Verdict.PASSED:
            # SHOULD level without --strict: shown (x), never a failure of the run.
            pytest.xfail(
                f"{outcome.verdict.value} at SHOULD level (fails the run only with --strict): "
                + _first_problem(outcome)
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, (ScenarioFailed, HarnessError)):
            return excinfo.value.text
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.scenario.location.line - 1, f"{self.scenario.id} [{self.port}]"


def _headline(outcome: Outcome) -> str:
    """One line for Allure's message: the first failing step and its first problem."""
    for failure in outcome.failures + outcome.should_failures:
        problem = failure.problems[0] if failure.problems else ""
        return f"{failure.level.value} step '{failure.step}' at {failure.location}: {problem}"
    return f"{outcome.verdict.value}: {outcome.reason}"


def _first_problem(outcome: Outcome) -> str:
    for failure in outcome.failures + outcome.should_failures:
        return f"step '{failure.step}': {failure.problems[0]}"
    return outcome.reason


def _failure_text(outcome: Outcome, requirements: dict[str, Requirement]) -> str:
    s = outcome.scenario
    verdict = outcome.verdict.value
    if outcome.blocked_by:
        req = requirements.get(outcome.blocked_by)
        verdict += f" by {outcome.blocked_by}" + (f" ({req.text})" if req else "")
    lines = [f"{s.id} [{outcome.port}]: {verdict} ({outcome.judged_level.value})", f"  {s.title}"]
    for rid in s.requirements:
        req = requirements.get(rid)
        lines.append(f"  requirement {rid}: {req.text if req else '?'}")
    if outcome.reason:
        lines.append(f"  reason: {outcome.reason}")
    first_at = None
    for failure in outcome.failures + outcome.should_failures:
        lines.append(f"  {failure.level.value} step '{failure.step}' at {failure.location}:")
        lines += [f"    - {p}" for p in failure.problems]
        first_at = failure.transcript_at if first_at is None else first_at
    if first_at is not None and len(outcome.transcript) > LONG_TRANSCRIPT:
        # A long exchange: the lines around the failing step; reports keep the whole of it.
        lines.append("  transcript (around the failing step; the reports hold all of it):")
        shown = outcome.transcript.render(around=first_at, context=LONG_TRANSCRIPT // 2)
    else:
        lines.append("  transcript:")
        shown = outcome.transcript.render()
    lines += ["    " + line for line in shown.splitlines()]
    return "\n".join(lines)


_EMPTY_SELECTION = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after pytest's own -k and -m deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    tags = set(config.getoption("--conformance-tag"))
    requirements = set(config.getoption("--conformance-requirement"))
    scenario_items = [i for i in items if isinstance(i, ScenarioItem)]
    selecting = tags or requirements or config.getoption("keyword") or config.getoption("markexpr")
    # Only a run against a target selects scenarios: pytest runs of other tests (the project's
    # own, with -k) are none of our business.
    if selecting and config.getoption("--target"):
        reason = _empty_selection(config, scenario_items, tags, requirements)
        if reason:
            config.stash[_EMPTY_SELECTION] = reason
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if isinstance(item, ScenarioItem):
            if tags and not tags & set(item.scenario.tags):
                dropped.append(item)
                continue
            if requirements and not requirements & set(item.scenario.requirements):
                dropped.append(item)
                continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    # Destructive scenarios last: they hold the target exclusively and leave it blocking us.
    # With --conformance-lanes (what `anypost-conformance run -n N` uses), the scenarios that
    # spend the auth-failure budget come first: their lane starts first (issue 10).
    from .schedule import order_key

    parallel = bool(config.getoption("--conformance-lanes"))
    keep.sort(
        key=lambda i: order_key(i.scenario, parallel) if isinstance(i, ScenarioItem) else (0, 1)
    )
    items[:] = keep


def _empty_selection(
    config: pytest.Config,
    items: list[ScenarioItem],
    tags: set[str],
    requirements: set[str],
) -> str:
    """Why no scenario is selected, naming each selector that matched nothing; "" if some is."""
    chosen = [
        i
        for i in items
        if (not tags or tags & set(i.scenario.tags))
        and (not requirements or requirements & set(i.scenario.requirements))
    ]
    if chosen:
        return ""
    known: dict[str, Requirement] = config.stash.get(_REQUIREMENTS, {})
    said = []
    keyword = config.getoption("keyword")
    marks = config.getoption("markexpr")
    if (keyword or marks) and not items:
        said += [f"-k {keyword!r} matched no scenario"] if keyword else []
        said += [f"-m {marks!r} matched no scenario"] if marks else []
    for tag in sorted(tags):
        if not any(tag in i.scenario.tags for i in items):
            said.append(f"--tag {tag} matched no scenario" + (" left by -k" if keyword else ""))
    for rid in sorted(requirements):
        if known and rid not in known:
            said.append(f"--requirement {rid} is not a requirement id (see requirements.yaml)")
        elif not any(rid in i.scenario.requirements for i in items):
            said.append(
                f"--requirement {rid} matched no scenario" + (" left by -k" if keyword else "")
            )
    if not said:
        said.append("each selector matched some scenario, but no scenario matches them all")
    return "no scenario selected: " + "; ".join(said)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    reason = config.stash.get(_EMPTY_SELECTION, "")
    return [reason] if reason else []


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--conformance-lanes: one pytest-xdist worker runs the budget lane (conformance.schedule)
    while the others run the rest. xdist's own ``loadgroup`` cannot do it under pytest 9 (it
    renames items through an attribute pytest 9 no longer reads), so the lanes are ours."""
    if not config.getoption("--conformance-lanes"):
        return None
    from .lanes import LaneScheduling

    return LaneScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A skip (not verified) points at the scenario in its YAML, not at this plugin.
    if isinstance(item, ScenarioItem) and report.skipped and isinstance(report.longrepr, tuple):
        _, _, reason = report.longrepr
        report.longrepr = (str(item.path), item.scenario.location.line, reason)
    return report


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The record has reached the controller with the call's report; it is not repeated as a
    JUnit property (the teardown report's), where it would double the file's evidence."""
    item.user_properties[:] = [p for p in item.user_properties if p[0] != RECORD_KEY]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.skipped):
        return
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            _RECORD_SINK.append(json.loads(str(value)))


_RECORD_SINK: list[dict[str, Any]] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    folder = config.getoption("--conformance-report-dir")
    profile = config.stash.get(_PROFILE, None)
    if not folder or profile is None:
        return
    from .reporting import write_reports

    target = {
        "name": profile.name,
        "host": profile.host,
        "ports": profile.ports,
        "insecure": profile.tls.insecure,
        "profile": profile.file,
        # Run with --allow-missing-keys: what needed these keys is "not verified".
        "unset_key_variables": unset_key_variables(profile),
    }
    target["probe"] = config.stash.get(_PROBE, {})
    write_reports(
        Path(folder),
        list(_RECORD_SINK),
        _run_requirements(config),
        target,
        run=_run_facts(config, exitstatus),
    )


def _run_requirements(config: pytest.Config) -> dict[str, Requirement]:
    """The requirements of the run. Under pytest-xdist the controller collects nothing, so they
    are read from the requirements.yaml of the scenario files that ran."""
    known: dict[str, Requirement] = config.stash.get(_REQUIREMENTS, {})
    if known or not _RECORD_SINK:
        return known
    from .requirements import find_requirements, load_requirements

    found: dict[str, Requirement] = {}
    for file in sorted({str(r["location"]).rsplit(":", 2)[0] for r in _RECORD_SINK}):
        if Path(file).is_file():
            found.update(load_requirements(find_requirements(Path(file).parent)))
    return found


def _run_facts(config: pytest.Config, exitstatus: int) -> dict[str, Any]:
    """What the report says about the run itself: interrupted or not, and which catalogue."""
    from .listing import catalogue_digest
    from .requirements import find_requirements

    collected: dict[str, str] = config.stash.get(_CATALOGUE, {})
    files = dict(collected)
    if not files:  # under pytest-xdist the controller collects nothing: the files that ran
        for r in _RECORD_SINK:
            name = Path(str(r["location"]).rsplit(":", 2)[0])
            if name.is_file():
                files[str(name)] = str(find_requirements(name.parent).parent)
    roots = sorted(set(files.values()))
    return {
        "interrupted": exitstatus == pytest.ExitCode.INTERRUPTED,
        "strict": bool(config.getoption("--conformance-strict")),
        "catalogue": {"files": len(files), "sha256": catalogue_digest(files)},
        "scenario_root": roots[0] if len(roots) == 1 else "",
    }


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    empty = config.stash.get(_EMPTY_SELECTION, "")
    if empty:
        terminalreporter.section("anypost-conformance")
        terminalreporter.line(empty, red=True)
    profile = config.stash.get(_PROFILE, None)
    unset = unset_key_variables(profile) if profile is not None else []
    if unset and _RECORD_SINK:
        missing = [r for r in _RECORD_SINK if r["verdict"] == "not verified"]
        terminalreporter.section("not verified: key variables unset (--allow-missing-keys)")
        terminalreporter.line(
            f"{len(missing)} of {len(_RECORD_SINK)} scenario runs were not verified; unset: "
            f"{', '.join(unset)}",
            yellow=True,
        )
    warned = [r for r in _RECORD_SINK if r["verdict"] == "passed" and r["should_failures"]]
    if not warned:
        return
    terminalreporter.section("SHOULD-level warnings (fail with --strict)")
    for r in warned:
        for f in r["should_failures"]:
            terminalreporter.line(
                f"{r['scenario']}[{r['port']}] step '{f['step']}': {'; '.join(f['problems'])}"
            )
