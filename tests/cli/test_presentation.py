"""How a run meets a person: console lines, budget waits, the table per requirement, report
paths, pytest options passed through, list and --version, interruption (issue 10)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from reference_server.session import AnypostSMTP

from ..plugin.test_plugin import write_profile
from ..support import KEYS, ServerThread, make_config, running
from .test_cli import CATALOGUE, cli

COOLDOWN = 2.0


@pytest.fixture
def keys_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PLUGIN_KEY_SEND_ONLY": KEYS["send_only"],
        "PLUGIN_KEY_RESTRICTED": KEYS["restricted"],
        "ANYPOST_CONFORMANCE_STATE": str(tmp_path / "state"),
    }


def slow_profile(folder: Path, server: ServerThread) -> Path:
    """The plugin tests' profile with a cooldown long enough to be announced."""
    path = write_profile(folder, server)
    doc = yaml.safe_load(path.read_text())
    doc["limits"]["auth_failure_cooldown"] = COOLDOWN
    path.write_text(yaml.safe_dump(doc))
    return path


def test_console_lines_waits_table_and_report_paths(
    tmp_path: Path, keys_env: dict[str, str]
) -> None:
    from ..selfcheck.variants import IgnoresUsername

    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=COOLDOWN)
    reports = tmp_path / "reports"
    with running(config, handler_class=IgnoresUsername) as server:
        done = cli(
            "run",
            "--target",
            str(slow_profile(tmp_path, server)),
            "--report-dir",
            str(reports),
            "--tag",
            "auth",
            "-v",  # passed through to pytest: the failing step under the line
            str(CATALOGUE),
            env=keys_env,
        )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    # A line per scenario and port: mark, id, port, requirement ids, time.
    assert re.search(
        r"^  PASS +auth/send-only-key-plain \[submission\]  AUTH-\S.* \d+\.\d\ds$", out, re.M
    ), out
    fail = re.search(r"^  FAIL +(auth/\S+) \[alternate\]  .*AUTH-1.* \d+\.\d\ds$", out, re.M)
    assert fail, out
    # -v: the failing step, with its file:line, under the line.
    assert re.search(r"^      MUST step '.*' at .*authentication\.scenario\.yaml:\d+", out, re.M)
    # Grouped by area: the area's heading comes before its lines.
    assert re.search(r"^auth$", out, re.M)
    # The budget waits are announced, with how long.
    assert re.search(r"waiting \d+s for the auth-failure budget: \d failed login", out), out
    # No pytest dots or file names in their place.
    assert not re.search(r"^scenarios/.*\.scenario\.yaml [.FsE]", out, re.M)
    # The table per requirement: AUTH-1 failed, AUTH-4 passed; uncovered ones say so.
    assert re.search(r"^AUTH-1 +MUST +failed +\d+ +[1-9]", out, re.M), out
    assert re.search(r"^AUTH-4 +MUST +passed +[1-9]\d* +0 ", out, re.M), out
    assert re.search(r"^SIZE-1 +MUST +not covered", out, re.M)
    for name in ("junit.xml", "conformance.json", "conformance.md", "conformance.html"):
        assert f"  {reports / name}" in out
    assert f"  {reports / 'allure-results'}/" in out
    assert not (reports / "pytest.ini").exists()


def test_console_not_verified_reason_in_the_table(
    tmp_path: Path, server: ServerThread, keys_env: dict[str, str]
) -> None:
    profile = write_profile(tmp_path, server)
    doc = yaml.safe_load(profile.read_text())
    del doc["keys"]["restricted"]
    profile.write_text(yaml.safe_dump(doc))
    done = cli(
        "run",
        "--target",
        str(profile),
        "--report-dir",
        str(tmp_path / "r"),
        "--requirement",
        "SENDER-2",
        "-x",
        str(CATALOGUE),
        env=keys_env,
    )
    assert re.search(r"^  NOT VERIFIED +\S+ \[submission\] .*\(.*restricted", done.stdout, re.M), (
        done.stdout
    )
    row = re.search(r"^SENDER-2 .*$", done.stdout, re.M)
    assert row and "restricted" in row.group(0), done.stdout


def test_cli_passes_pytest_options_through(tmp_path: Path, keys_env: dict[str, str]) -> None:
    """-x stops at the first failure; --maxfail=N and -- work too; the exit code says failed."""
    from ..selfcheck.variants import IgnoresUsername

    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    with running(config, handler_class=IgnoresUsername) as server:
        done = cli(
            "run",
            "--target",
            str(write_profile(tmp_path, server)),
            "--report-dir",
            str(tmp_path / "r"),
            "--requirement",
            "AUTH-1",
            str(CATALOGUE),
            "--",
            "-x",
            env=keys_env,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(re.findall(r"^  FAIL ", done.stdout, re.M)) == 1, done.stdout
    assert "stopping after 1 failures" in done.stdout


def test_cli_version_and_list() -> None:
    from conformance import __version__

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"anypost-conformance {__version__}"
    done = cli("list", "--tag", "starttls", str(CATALOGUE))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all("starttls" in line for line in lines)
    assert any(line.startswith("starttls/auth-refused-before-tls ") for line in lines)
    done = cli("list", "requirements", "--requirement", "TLS-3", str(CATALOGUE))
    assert re.fullmatch(r"TLS-3 +MUST +[1-9]\d* scenario\(s\)  Anypost refuses.*\n", done.stdout)
    done = cli("list", "tags", "--area", "auth", str(CATALOGUE))
    assert re.search(r"^auth +[1-9]\d* scenario\(s\)$", done.stdout, re.M), done.stdout
    assert "starttls " not in done.stdout
    done = cli("list", "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr


class RecordingSMTP(AnypostSMTP):
    """The reference server's session, recording the commands it receives, per session; the
    first MAIL of the server's life is answered only once the client sends something more (or
    closes, or HOLD seconds pass), holding that session open mid-scenario."""

    HOLD = 30.0
    sessions: ClassVar[list[RecordingSMTP]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()
    held: ClassVar[threading.Event] = threading.Event()

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.commands: list[str] = []
        self.closed = False
        with self.lock:
            self.sessions.append(self)
        self._smtp_methods = {
            name: self._recorded(name, method) for name, method in self._smtp_methods.items()
        }

    @classmethod
    def reset(cls) -> None:
        cls.sessions = []
        cls.held = threading.Event()

    def _recorded(
        self, name: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def recorded(arg: str | None) -> None:
            with self.lock:
                self.commands.append(name)
                hold = name == "MAIL" and not self.held.is_set()
                if hold:
                    self.held.set()
            if hold:
                await self._until_client_speaks()
            await method(arg)

        return recorded

    async def _until_client_speaks(self) -> None:
        deadline = self.loop.time() + self.HOLD
        while self.loop.time() < deadline:
            if getattr(self._reader, "_buffer", None) or self.transport is None:
                return  # a next line has arrived (read after this reply), or the client left
            if self.transport.is_closing():
                return
            await asyncio.sleep(0.01)

    def connection_lost(self, error: Exception | None) -> None:
        with self.lock:
            self.closed = True
        super().connection_lost(error)

    @classmethod
    def holding(cls) -> RecordingSMTP:
        with cls.lock:
            return next(s for s in cls.sessions if s.commands and s.commands[-1] == "MAIL")


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_interrupted_ends_the_open_session_with_quit(
    tmp_path: Path, keys_env: dict[str, str], signum: int, workers: str
) -> None:
    """Stopped while a scenario waits for a slow reply (with -n 0 and -n 2): the server
    receives QUIT on that session before it ends, the reports are written and marked
    interrupted, and the exit code is 130."""
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    reports = tmp_path / "reports"
    RecordingSMTP.reset()
    with running(config, smtp_class=RecordingSMTP) as server:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "conformance", "run"),
                *("--target", str(write_profile(tmp_path, server))),
                *("--report-dir", str(reports), "--tag", "auth", str(CATALOGUE)),
                *(("-n", workers) if workers != "0" else ()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **keys_env},
        )
        assert RecordingSMTP.held.wait(120), "no scenario sent MAIL"
        held = RecordingSMTP.holding()
        process.send_signal(signum)
        out, _ = process.communicate(timeout=90)
        with RecordingSMTP.lock:  # the server has seen that session end, with QUIT
            commands, closed = list(held.commands), held.closed
    assert closed and commands[-2:] == ["MAIL", "QUIT"], commands
    assert process.returncode == 130, out
    assert "INTERRUPTED" in out
    report = json.loads((reports / "conformance.json").read_text())
    assert report["run"]["interrupted"] is True
    assert (reports / "junit.xml").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_interrupted_writes_reports_and_exits_130(
    tmp_path: Path, keys_env: dict[str, str], signum: int
) -> None:
    """Stopped while it waits out the auth-failure budget: every report of what ran is written
    and marked interrupted, the summary is printed, and the exit code is 130."""
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=30.0)
    reports = tmp_path / "reports"
    with running(config) as server:
        profile = write_profile(tmp_path, server)
        doc = yaml.safe_load(profile.read_text())
        doc["limits"]["auth_failure_cooldown"] = 30
        profile.write_text(yaml.safe_dump(doc))
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "conformance", "run", "--target", str(profile)),
                *("--report-dir", str(reports), "--tag", "auth", str(CATALOGUE)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **keys_env},
        )
        assert process.stdout is not None
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "waiting" in line:
                break
        assert any("waiting" in line for line in seen), "".join(seen)
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=90)
    out = "".join(seen) + rest
    assert process.returncode == 130, out
    assert "INTERRUPTED" in out
    assert "conformance per requirement" in out
    assert (reports / "junit.xml").is_file()
    report = json.loads((reports / "conformance.json").read_text())
    assert report["run"]["interrupted"] is True
    ran = {f"{r['scenario']}[{r['port']}]" for r in report["scenarios"]}
    passed_lines = re.findall(r"^  PASS +(\S+) \[(\w+)\]", out, re.M)
    assert passed_lines and {f"{s}[{p}]" for s, p in passed_lines} <= ran
    assert "interrupted" in (reports / "conformance.html").read_text()


def test_cli_lanes_under_n2_same_verdicts_and_full_reports(
    tmp_path: Path, keys_env: dict[str, str]
) -> None:
    """-n 2 runs the budget lane on one worker (our scheduler); the verdicts are those of -n 0,
    and the controller's reports still carry the requirements and the catalogue."""
    from ..selfcheck.variants import IgnoresUsername

    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    verdicts = {}
    with running(config, handler_class=IgnoresUsername) as server:
        profile = write_profile(tmp_path, server)
        for workers in ("0", "2"):
            out = tmp_path / f"n{workers}"
            done = cli(
                *("run", "--target", str(profile), "--report-dir", str(out), "--tag", "auth"),
                *(("-n", workers) if workers != "0" else ()),
                "-v",  # xdist then names its scheduler
                str(CATALOGUE),
                env={**keys_env, "ANYPOST_CONFORMANCE_STATE": str(tmp_path / f"state{workers}")},
            )
            assert done.returncode == 1, done.stdout + done.stderr
            report = json.loads((out / "conformance.json").read_text())
            verdicts[workers] = {
                f"{r['scenario']}[{r['port']}]": r["verdict"] for r in report["scenarios"]
            }
            rows = {row["id"]: row["verdict"] for row in report["requirements"]}
            assert rows["AUTH-1"] == "failed" and rows["AUTH-4"] == "passed", rows
            assert report["run"]["catalogue"]["files"] >= 1
            assert re.search(r"^AUTH-1 +MUST +failed", done.stdout, re.M), done.stdout
    assert "scheduling tests via LaneScheduling" in done.stdout
    assert verdicts["0"] == verdicts["2"]
    assert "failed" in verdicts["2"].values()
