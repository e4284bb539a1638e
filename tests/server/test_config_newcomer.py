"""Configuration as a newcomer meets it: IDNA domains, errors with file:line, one default per
limit (code, sample, README), and `serve` running unprivileged with its state outside the
checkout and the variables it needs named."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reference_server.config import ConfigError, Limits, load_config

from ..support import KEYS, message, raw_config, running
from .test_process import _smtplib_submit
from .test_rfc_behaviour import Raw

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "reference_server" / "sample-config.yaml"
SAMPLE_ENV = {
    "ANYPOST_KEY_SEND_ONLY": "ap_a1",
    "ANYPOST_KEY_FULL_ACCESS": "ap_b2",
    "ANYPOST_KEY_RESTRICTED": "ap_c3",
    "ANYPOST_KEY_NO_SEND": "ap_d4",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.Test.", "xn--bcher-kva.test"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
        ("Acme.TEST", "acme.test"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_config_domains_normalized_to_a_labels(tmp_path: Path, written: str, stored: str) -> None:
    path = _write(tmp_path, f"teams:\n  - name: t\n    verified_domains: [{written!r}]\n")
    (team,) = load_config(path, env={}).teams
    assert team.verified_domains == frozenset({stored})


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("bad_name.test", "not a domain name"),
        ("-leading.test", "not a domain name"),
        ("two..dots.test", "not a domain name"),
        ("xn--zz-.test", "IDNA"),
        ("a\u200db.test", "IDNA"),  # a joiner with no context: no A-label
        ("", "expected a domain name"),
    ],
)
def test_config_bad_domain_refused_with_file_and_line(
    tmp_path: Path, domain: str, why: str
) -> None:
    text = (
        "hostname: x\n"
        "teams:\n"
        "  - name: t\n"
        "    verified_domains:\n"
        "      - ok.test\n"
        f"      - {json.dumps(domain)}\n"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message_ = str(caught.value)
    assert message_.startswith(f"{path}:6: teams[0].verified_domains[1]: "), message_
    assert why in message_


def test_config_errors_point_at_the_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "teams:\n  - name: a\n    keys:\n      - id: k\n        permission: root\n"
        "        secret_env: X\n",
    )
    with pytest.raises(ConfigError, match=r"server\.yaml:5: teams\[0\]\.keys\[0\]\.permission"):
        load_config(path, env={"X": "ap_x"})
    path = _write(tmp_path, "limits:\n  idle_timeout: soon\n")
    with pytest.raises(ConfigError, match=r"server\.yaml:2: limits\.idle_timeout: expected a"):
        load_config(path, env={})


def test_unicode_domain_from_config_matches_what_clients_send(tmp_path: Path) -> None:
    raw = raw_config(tmp_path)
    raw["teams"][0]["verified_domains"].append("bücher.test")
    config_path = _write(tmp_path, yaml.safe_dump(raw, allow_unicode=True))
    with running(load_config(config_path, env={})) as server:

        async def go() -> bytes:
            session = await Raw(server).open()
            await session.expect(b"MAIL FROM:<probe@xn--bcher-kva.test>", b"250")
            await session.expect(b"RCPT TO:<a@sink.test>", b"250")
            await session.expect(b"DATA", b"354")
            session.writer.write(message(from_="Probe <probe@XN--BCHER-KVA.test>"))
            final = await session.send(b".")
            await session.close()
            return final

        assert asyncio.run(go()).startswith(b"250 2.0.0 OK ids=")


def test_one_default_per_limit_in_code_sample_and_readme() -> None:
    defaults = Limits()
    sample = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))["limits"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for field in dataclasses.fields(Limits):
        value = getattr(defaults, field.name)
        assert sample[field.name] == value, field.name
        row = re.search(rf"^\| `{field.name}` \| (\S+) \|", readme, re.MULTILINE)
        assert row is not None and float(row.group(1)) == value, field.name
    assert load_config(SAMPLE, env=SAMPLE_ENV).limits == defaults


def test_sample_config_is_unprivileged_and_keeps_state_outside_the_checkout(
    tmp_path: Path,
) -> None:
    config = load_config(SAMPLE, env={**SAMPLE_ENV, "HOME": str(tmp_path)})
    assert all(port >= 1024 for port in config.ports) and len(set(config.ports)) == 3
    assert config.spool == tmp_path / ".local/state/anypost-reference-server"
    xdg = load_config(SAMPLE, env={**SAMPLE_ENV, "XDG_STATE_HOME": str(tmp_path / "s")})
    assert xdg.spool == tmp_path / "s" / "anypost-reference-server"


def test_missing_key_variables_are_all_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYPOST_KEY_")}
    done = subprocess.run(
        [sys.executable, "-m", "reference_server", "--config", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    for name in SAMPLE_ENV:
        assert name in done.stderr, done.stderr
    assert re.search(r"sample-config\.yaml:\d+: teams\[0\]\.keys\[0\]", done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_serve_runs_for_a_newcomer(tmp_path: Path) -> None:
    """The sample configuration as it stands, with only the four variables set and a home
    folder: the state goes to the home's state folder, and a submission works (free ports,
    since other tests may hold the sample's)."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env.update(SAMPLE_ENV, HOME=str(tmp_path), ANYPOST_KEY_SEND_ONLY=KEYS["send_only"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "serve", "--ports", "0,0,0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        state = tmp_path / ".local/state/anypost-reference-server"
        assert Path(info["spool"]) == state and Path(info["ca"]).parent == state
        assert not (ROOT / "reference_server" / "spool").exists()
        code, _ = _smtplib_submit(info["ports"][0], info["ca"], "newcomer\r\n")
        assert code == 250
        assert any((state / "maildir").iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
