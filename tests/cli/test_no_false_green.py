"""No false green: a run that could not check what it claims says so and does not exit 0.

Unset key variables are a usage error before any connection (unless --allow-missing-keys, and
then the summary says how much was not verified); check-scenarios rejects variables no profile
can fill and unknown requirement ids wherever the file lives; an empty selection names the
selector that matched nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..plugin.test_plugin import write_profile
from ..support import KEYS, ServerThread, make_config, running
from .test_cli import CATALOGUE, cli


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with running(make_config(tmp_path)) as thread:
        yield thread


def _state(tmp_path: Path) -> dict[str, str]:
    return {"ANYPOST_CONFORMANCE_STATE": str(tmp_path / "state")}


def test_cli_unset_key_variables_exit_2_before_any_connection(
    tmp_path: Path, server: ServerThread
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: a connection would be refused
        profile = write_profile(tmp_path, server, sock.getsockname()[1])
        env = {**_state(tmp_path), "PLUGIN_KEY_SEND_ONLY": "", "PLUGIN_KEY_RESTRICTED": ""}
        done = cli("run", "--target", str(profile), "--report-dir", str(tmp_path / "r"), env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "PLUGIN_KEY_RESTRICTED (key role restricted)" in out
    assert "PLUGIN_KEY_SEND_ONLY (key role send_only)" in out
    assert "--allow-missing-keys" in out
    assert "unreachable" not in out  # the keys were checked first, before connecting


def test_cli_allow_missing_keys_runs_and_says_how_much_was_not_verified(
    tmp_path: Path, server: ServerThread
) -> None:
    profile = write_profile(tmp_path, server)
    env = {
        **_state(tmp_path),
        "PLUGIN_KEY_SEND_ONLY": KEYS["send_only"],
        "PLUGIN_KEY_RESTRICTED": "",
    }
    done = cli(
        "run",
        "--target",
        str(profile),
        "--report-dir",
        str(tmp_path / "r"),
        "--allow-missing-keys",
        "--requirement",
        "SENDER-2",
        env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "scenario runs were not verified; unset: PLUGIN_KEY_RESTRICTED" in out
    report = json.loads((tmp_path / "r" / "conformance.json").read_text())
    assert report["target"]["unset_key_variables"] == [
        "PLUGIN_KEY_RESTRICTED (key role restricted)"
    ]
    assert report["summary"].get("not verified", 0) > 0


def test_cli_check_scenarios_rejects_a_variable_no_profile_can_hold(tmp_path: Path) -> None:
    text = (CATALOGUE / "sender/envelope.scenario.yaml").read_text()
    (tmp_path / "requirements.yaml").write_text((CATALOGUE / "requirements.yaml").read_text())
    typo = tmp_path / "typo.scenario.yaml"
    typo.write_text(text.replace("${domains.unverified}", "${domains.unverifed}", 1))
    done = cli("check-scenarios", str(typo))
    assert done.returncode == 2
    assert "typo.scenario.yaml:" in done.stderr
    assert "${domains.unverifed}: the profile has no domains.unverifed" in done.stderr
    assert "domains.unverified" in done.stderr  # what was expected
    bad_limit = tmp_path / "limit.scenario.yaml"
    bad_limit.write_text(text.replace("${domains.verified}", "${limits.size}", 1))
    done = cli("check-scenarios", str(bad_limit))
    assert done.returncode == 2 and "the profile has no limits.size" in done.stderr
    # The nearest input that must still pass: the same file, spelt right.
    good = tmp_path / "good.scenario.yaml"
    good.write_text(text)
    assert cli("check-scenarios", str(good)).returncode == 0


def test_cli_check_scenarios_unknown_requirement_anywhere(tmp_path: Path) -> None:
    # No requirements.yaml beside the file or above it: the bundled catalogue's applies.
    loose = tmp_path / "loose.scenario.yaml"
    text = (CATALOGUE / "session/session.scenario.yaml").read_text()
    loose.write_text(text.replace("requirements: [RFC-8]", "requirements: [RFC-99]"))
    done = cli("check-scenarios", str(loose))
    assert done.returncode == 2
    assert "unknown requirement RFC-99" in done.stderr
    loose.write_text(text)
    assert cli("check-scenarios", str(loose)).returncode == 0


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        (["--tag", "no-such-tag"], "--tag no-such-tag matched no scenario"),
        (["--requirement", "RFC-99"], "--requirement RFC-99 is not a requirement id"),
        (["-k", "no_such_scenario"], "-k 'no_such_scenario' matched no scenario"),
    ],
)
def test_cli_empty_selection_names_the_selector(
    tmp_path: Path, server: ServerThread, selector: list[str], says: str
) -> None:
    profile = write_profile(tmp_path, server)
    env = {
        **_state(tmp_path),
        "PLUGIN_KEY_SEND_ONLY": KEYS["send_only"],
        "PLUGIN_KEY_RESTRICTED": KEYS["restricted"],
    }
    done = cli(
        "run",
        "--target",
        str(profile),
        "--report-dir",
        str(tmp_path / "r"),
        str(CATALOGUE / "session"),
        *selector,
        env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert says in out, out
