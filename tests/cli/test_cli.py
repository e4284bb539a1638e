"""The CLI's promises: exit codes 0/1/2, reports written, bad input explained."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..plugin.test_plugin import write_profile
from ..support import KEYS, make_config, running

CATALOGUE = Path(__file__).resolve().parents[2] / "scenarios"


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture
def keys_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PLUGIN_KEY_SEND_ONLY": KEYS["send_only"],
        "PLUGIN_KEY_RESTRICTED": KEYS["restricted"],
        "ANYPOST_CONFORMANCE_STATE": str(tmp_path / "state"),
    }


def test_cli_check_scenarios_catalogue_is_valid() -> None:
    done = cli("check-scenarios", str(CATALOGUE))
    assert done.returncode == 0, done.stderr
    assert re.match(r"\d+ scenarios in \d+ file\(s\): all valid", done.stdout)


def test_cli_check_scenarios_typo_exits_2_with_location(tmp_path: Path) -> None:
    (tmp_path / "requirements.yaml").write_text((CATALOGUE / "requirements.yaml").read_text())
    bad = tmp_path / "bad.scenario.yaml"
    bad.write_text(
        (CATALOGUE / "starttls/enforcement.scenario.yaml")
        .read_text()
        .replace("requirements: [TLS-3]", "requirement: [TLS-3]")
    )
    done = cli("check-scenarios", str(tmp_path))
    assert done.returncode == 2
    assert "bad.scenario.yaml:" in done.stderr and "'requirement' was unexpected" in done.stderr


def test_cli_check_scenarios_duplicate_id_exits_2(tmp_path: Path) -> None:
    (tmp_path / "requirements.yaml").write_text((CATALOGUE / "requirements.yaml").read_text())
    for name in ("a", "b"):
        (tmp_path / f"{name}.scenario.yaml").write_text(
            (CATALOGUE / "session/session.scenario.yaml").read_text()
        )
    done = cli("check-scenarios", str(tmp_path))
    assert done.returncode == 2 and "is already used at" in done.stderr


def _run_with_one_port_on(
    tmp_path: Path, keys_env: dict[str, str], listen: bool
) -> subprocess.CompletedProcess[str]:
    """A run whose profile has one port on a socket of our own: bound only (nothing accepts),
    or listening (the kernel accepts, nobody ever greets)."""
    with running(make_config(tmp_path)) as server, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if listen:
            sock.listen(8)
        profile = write_profile(tmp_path, server, sock.getsockname()[1])
        return cli(
            "run",
            "--target",
            str(profile),
            "--report-dir",
            str(tmp_path / "r"),
            str(CATALOGUE),
            env=keys_env,
        )


def test_cli_run_unreachable_target_exits_2(tmp_path: Path, keys_env: dict[str, str]) -> None:
    done = _run_with_one_port_on(tmp_path, keys_env, listen=False)
    assert done.returncode == 2
    assert "target unreachable" in done.stderr + done.stdout


def test_cli_run_silent_target_exits_2(tmp_path: Path, keys_env: dict[str, str]) -> None:
    done = _run_with_one_port_on(tmp_path, keys_env, listen=True)
    assert done.returncode == 2
    assert "target unresponsive" in done.stderr + done.stdout
    assert "sent no greeting" in done.stderr + done.stdout


def test_cli_run_bad_profile_exits_2(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "schema_version: 1\ntarget: {host: x, ports: {a: 1}}\nkeys: {}\ndomains: {}\nrecipients: []\nextra: 1\n"
    )
    done = cli("run", "--target", str(profile), "--report-dir", str(tmp_path / "r"), str(CATALOGUE))
    assert done.returncode == 2
    assert (
        "p.yaml:5:" in done.stderr + done.stdout
        and "'extra' was unexpected" in done.stderr + done.stdout
    )


def test_cli_run_exit_codes_pass_and_fail(tmp_path: Path, keys_env: dict[str, str]) -> None:
    from ..selfcheck.variants import AcceptsAnyKey

    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    with running(config) as good:
        done = cli(
            "run",
            "--target",
            str(write_profile(tmp_path, good)),
            "--report-dir",
            str(tmp_path / "good"),
            "--tag",
            "starttls",
            "-q",
            str(CATALOGUE),
            env=keys_env,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("junit.xml", "conformance.json", "conformance.md", "conformance.html"):
        assert (tmp_path / "good" / name).is_file()
    assert list((tmp_path / "good" / "allure-results").glob("*-result.json"))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    with running(
        make_config(bad_dir, auth_failure_threshold=3, auth_failure_cooldown=1.0),
        handler_class=AcceptsAnyKey,
    ) as bad:
        done = cli(
            "run",
            "--target",
            str(write_profile(bad_dir, bad)),
            "--report-dir",
            str(tmp_path / "bad-r"),
            "--requirement",
            "AUTH-4",
            "-q",
            str(CATALOGUE),
            env=keys_env,
        )
    assert done.returncode == 1, done.stdout + done.stderr


def test_cli_run_bundled_reference_server(tmp_path: Path) -> None:
    """The main job, narrowed to one tag: it starts the bundled server and leaves no key behind."""
    done = cli(
        "run",
        "--report-dir",
        str(tmp_path / "reports"),
        "--tag",
        "smoke",
        "-q",
        cwd=Path(__file__).resolve().parents[2],
        env={"ANYPOST_CONFORMANCE_STATE": str(tmp_path / "state")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundled reference server on 127.0.0.1" in done.stdout
    texts = [
        p.read_text(errors="replace") for p in (tmp_path / "reports").rglob("*") if p.is_file()
    ]
    assert texts
    generated = re.compile(r"ap_[A-Za-z0-9_-]{32}")  # the shape of the keys the bundled run makes
    assert not any(generated.search(t) for t in texts)
