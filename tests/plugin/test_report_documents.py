"""The documents a run leaves for people (issue 10): conformance.html read in a real headless
Chromium, conformance.md escaped and free of machine paths, Allure results one test per scenario
and port with the right statuses, rendered by the Allure 3 CLI when it is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..support import KEYS, ServerThread, make_config, running
from .test_plugin import copy_catalogue, write_profile

ROOT = Path(__file__).resolve().parents[2]
# The wrapper page reads what a person sees: innerText honours CSS, closed <details> and the
# hidden attribute. It reads once as loaded, then again with the "passed" filter unticked.
PROBE = """<!doctype html><meta charset="utf-8"><body>
<iframe id="f" src="conformance.html" style="width:1200px;height:900px"></iframe>
<pre id="out"></pre>
<script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument;
  var summary = d.getElementById('summary').innerText;
  var before = d.body.innerText;
  d.querySelectorAll('input[name=kind][value=passed]').forEach(function (i) {
    i.checked = false; i.dispatchEvent(new Event('change')); });
  var after = d.body.innerText;
  document.getElementById('out').textContent =
    JSON.stringify({summary: summary, before: before, after: after});
});
</script>
"""


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLUGIN_KEY_SEND_ONLY", KEYS["send_only"])
    monkeypatch.setenv("PLUGIN_KEY_RESTRICTED", KEYS["restricted"])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the authentication scenarios against a server that ignores the username
    (AUTH-1 fails there), with every report."""
    from ..selfcheck.variants import IgnoresUsername

    tmp = tmp_path_factory.mktemp("documents")
    folder = tmp / "scenarios"
    folder.mkdir()
    shutil.copy(ROOT / "scenarios" / "requirements.yaml", folder)
    (folder / "auth").mkdir()
    shutil.copy(ROOT / "scenarios" / "auth" / "authentication.scenario.yaml", folder / "auth")
    out = tmp / "out"
    config = make_config(tmp, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    env = {
        **os.environ,
        "PLUGIN_KEY_SEND_ONLY": KEYS["send_only"],
        "PLUGIN_KEY_RESTRICTED": KEYS["restricted"],
        "ANYPOST_CONFORMANCE_STATE": str(tmp / "state"),
    }
    with running(config, handler_class=IgnoresUsername) as server:
        profile = write_profile(tmp, server)
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(folder)),
                *("--rootdir", str(tmp), "-c", os.devnull, "--target", str(profile)),
                *("--conformance-report-dir", str(out), "--alluredir", str(out / "allure")),
                *("-k", "username or send-only-key-plain or full-access"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    return {"out": out, "stdout": done.stdout, "root": folder}


def _missing(what: str) -> None:
    """Skip where a developer lacks the tool; in CI (CI=true), where .ci/run installs it, fail:
    a silent skip there would hide a missing install step."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def test_html_read_in_headless_chromium_shows_summary_and_failure(
    failing_run: dict[str, Any], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _missing("chromium is not installed (.ci/run installs it)")
    page = tmp_path / "conformance.html"
    shutil.copy(failing_run["out"] / "conformance.html", page)
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    (tmp_path / "probe.html").write_text(PROBE)
    done = subprocess.run(
        [
            chromium,
            *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
            f"--user-data-dir={tmp_path / 'profile'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (tmp_path / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    start = done.stdout.find('<pre id="out">')
    assert start >= 0, done.stdout[-2000:] + done.stderr[-2000:]
    import html as htmllib

    text = htmllib.unescape(done.stdout[start + len('<pre id="out">') :].split("</pre>")[0])
    seen = json.loads(text)
    # The summary: counts in words, failures among them.
    assert "failed" in seen["summary"] and "passed" in seen["summary"], seen["summary"]
    assert "{" not in seen["summary"]  # not raw JSON
    before = seen["before"]
    # The header: target, harness, date, TLS of the target.
    for label in ("target", "harness", "catalogue", "date", "TLS certificate"):
        assert label in before
    assert "TLSv1." in before and "banner" in before
    # A failure, first, open: requirement id and sentence, step with file:line (relative),
    # what was expected against what came back, and the transcript.
    first_failure = before.index("FAILED: auth/")
    assert first_failure < before.index("PASSED: auth/send-only-key-plain")
    assert "AUTH-1: The username is always the literal string anypost." in before
    assert "auth/authentication.scenario.yaml:" in before
    assert str(failing_run["root"]) not in before  # paths relative to the scenario root
    assert "expected a 5xx reply, got 235" in before
    assert "> AUTH PLAIN <redacted" in before  # the transcript, open
    # Not verified, with its reason.
    assert "the profile has no key of role full_access" in before
    # The filter: with "passed" unticked, no passed scenario is visible, the failure still is.
    assert "PASSED: auth/send-only-key-plain" not in seen["after"]
    assert "FAILED: auth/" in seen["after"]


def test_markdown_escapes_and_keeps_no_machine_path(failing_run: dict[str, Any]) -> None:
    run = json.loads((failing_run["out"] / "conformance.json").read_text())["run"]
    assert run["catalogue"]["files"] == 1 and len(run["catalogue"]["sha256"]) == 16
    assert Path(run["scenario_root"]) == failing_run["root"] and run["interrupted"] is False
    text = (failing_run["out"] / "conformance.md").read_text()
    assert str(failing_run["root"]) not in text
    assert "auth/authentication.scenario.yaml:" in text
    # RFC-4's sentence survives: <LF> and <CRLF> are entities, not swallowed as tags.
    assert "the sequence &lt;LF&gt;.&lt;LF&gt; (bare line feeds" in text
    assert "## Failures" in text and text.index("## Failures") < text.index("## Passed")


def test_markdown_escape_unit() -> None:
    from conformance.report_md import escape, fence

    assert escape("a|b <CRLF> *x* [y](z) `c`") == ("a\\|b &lt;CRLF&gt; \\*x\\* \\[y\\](z) \\`c\\`")
    assert fence("has ``` inside")[0] == "````text"


def _results(folder: Path) -> list[dict[str, Any]]:
    loaded = [json.loads(p.read_text()) for p in folder.glob("*-result.json")]
    assert loaded
    return loaded


def test_allure_one_test_per_port_statuses_steps_and_labels(failing_run: dict[str, Any]) -> None:
    results = _results(failing_run["out"] / "allure")
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        labels = {(lab["name"], lab["value"]) for lab in r["labels"]}
        story = next(v for n, v in labels if n == "story")
        port = next(p["value"] for p in r["parameters"] if p["name"] == "port")
        by_key[(story, port.strip("'"))] = r
    assert len(by_key) == len(results)
    assert len({r["historyId"] for r in results}) == len(results)
    assert len({r["testCaseId"] for r in results}) == len(results)
    failed = by_key[("auth/wrong-username-refused", "submission")]
    assert failed["status"] == "failed"
    assert "expected a 5xx reply" in failed["statusDetails"]["message"]
    assert failed["statusDetails"]["message"].count("\n") == 0  # the headline, not all of it
    assert [s["status"] for s in failed["steps"]][-1] == "failed"
    assert all(s["status"] == "passed" for s in failed["steps"][:-1])
    labels = {(lab["name"], lab["value"]) for lab in failed["labels"]}
    assert {("epic", "auth"), ("feature", "AUTH-1"), ("severity", "critical")} <= labels
    assert any(link["url"].endswith("#AUTH-1") for link in failed["links"])
    passed = by_key[("auth/send-only-key-plain", "alternate")]
    assert passed["status"] == "passed"
    skipped = by_key[("auth/full-access-key", "submission")]
    assert skipped["status"] == "skipped"
    assert not any(r["status"] == "broken" for r in results)


def _allure_cli() -> str | None:
    for candidate in (
        os.environ.get("ANYPOST_ALLURE_CLI", ""),
        str(ROOT / ".ci" / "allure" / "node_modules" / ".bin" / "allure"),
        shutil.which("allure") or "",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_allure3_cli_renders_the_run(failing_run: dict[str, Any], tmp_path: Path) -> None:
    cli = _allure_cli()
    if cli is None:
        _missing("the Allure 3 CLI is not installed (.ci/run installs it: npm install allure)")
    results = _results(failing_run["out"] / "allure")
    done = subprocess.run(
        [cli, "generate", str(failing_run["out"] / "allure"), "--output", str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "html" / "index.html").is_file()
    summary = json.loads((tmp_path / "html" / "summary.json").read_text())
    stats = summary["stats"]
    assert stats["total"] == len(results)  # no port folded into another as a retry
    assert summary["retryTests"] == []
    assert stats.get("failed", 0) == sum(r["status"] == "failed" for r in results) >= 1
    assert stats.get("broken", 0) == 0
    assert summary["status"] == "failed"


def test_repeat_reports_stability(
    pytester: pytest.Pytester, server: ServerThread, tmp_path: Path
) -> None:
    folder = copy_catalogue(pytester, "starttls/enforcement.scenario.yaml")
    profile = write_profile(pytester.path, server)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(folder),
        "--target",
        str(profile),
        "--conformance-report-dir",
        str(out),
        "--conformance-repeat",
        "3",
        "--conformance-console",
        "-k",
        "upgrade-succeeds",
    )
    result.assert_outcomes(passed=2)
    report = json.loads((out / "conformance.json").read_text())
    assert all(r["repeat"] == ["passed"] * 3 for r in report["scenarios"])
    result.stdout.fnmatch_lines(
        ["*stable*starttls/upgrade-succeeds ?submission?*3 runs: 3 passed*"]
    )
