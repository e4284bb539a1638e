from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import ServerThread, make_config, running

pytest_plugins = ["pytester"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with running(make_config(tmp_path)) as thread:
        yield thread
