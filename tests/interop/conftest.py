"""Fixtures for interop tests: the reference server as a process, and the real tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support import raw_config

# The Debian package that provides each tool (.ci/run installs them all).
PACKAGES = {"swaks": "swaks", "curl": "curl", "msmtp": "msmtp", "postfix": "postfix"}


def require(tool: str) -> str:
    """The tool's path; a missing tool fails the test (never a silent skip), saying what to do."""
    found = shutil.which(tool)
    if found is None:
        pytest.fail(
            f"{tool} is not installed: apt-get install {PACKAGES.get(tool, tool)} "
            "(.ci/run installs it in CI); the interop tests need the real tool",
            pytrace=False,
        )
    return found


class ReferenceProcess:
    """``python -m reference_server`` on three free loopback ports, as any client sees it."""

    def __init__(self, workdir: Path) -> None:
        config = workdir / "server.yaml"
        config.write_text(yaml.safe_dump(raw_config(workdir)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reference_server", "--config", str(config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.info: dict[str, Any] = json.loads(self.proc.stdout.readline())

    @property
    def port(self) -> int:
        return int(self.info["ports"][0])

    @property
    def ca(self) -> str:
        return str(self.info["ca"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceProcess]:
    proc = ReferenceProcess(tmp_path_factory.mktemp("reference"))
    try:
        yield proc
    finally:
        proc.close()
