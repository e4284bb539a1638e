"""The pytest-xdist scheduler of ``--conformance-lanes``: lanes of scenarios by what they cost.

Each pytest-xdist "scope" goes whole to one worker, in collection order (with
``--no-loadscope-reorder``). Every scenario spending the auth-failure budget is in one scope, the
budget lane, collected first (``schedule.order_key``): one worker takes it at the start and
works through its cooldown waits while the others run everything else, one scenario at a time.
Destructive scenarios share a last scope. The controller does not collect, so it reads the lane
of a test id from its scenario file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from .errors import ConformanceError
from .loader import load_scenarios
from .requirements import find_requirements, load_requirements
from .schedule import lane


class LaneScheduling(LoadScopeScheduling):
    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self._root = Path(str(config.rootpath))
        self._lanes: dict[str, dict[str, str | None]] = {}  # file -> scenario id -> lane

    def _split_scope(self, nodeid: str) -> str:
        path, sep, rest = nodeid.partition("::")
        if not sep or "[" not in rest:
            return nodeid
        scenario_id = rest.rsplit("[", 1)[0]
        found = self._lanes_of(path).get(scenario_id)
        return found if found is not None else nodeid

    def _lanes_of(self, path: str) -> dict[str, str | None]:
        if path not in self._lanes:
            file = self._root / path
            try:
                requirements = load_requirements(find_requirements(file.parent))
                self._lanes[path] = {s.id: lane(s) for s in load_scenarios(file, requirements)}
            except (ConformanceError, OSError):
                self._lanes[path] = {}  # not a scenario file: each test on its own
        return self._lanes[path]
