"""A pytest plugin for the benchmarks only: when a run spends its time, on which worker.

Loaded with ``-p benchmarks.timeline`` and ``ANYPOST_BENCH_TIMELINE=<file>``, it appends one
JSON line per event (wall-clock seconds, process id, xdist worker): each scenario's start and
end, and the auth-failure budget's reservations, waits, counted failures and releases. It
observes and changes nothing: each budget method is wrapped to note when it ran, then called
as it is. Without the variable it does nothing.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

ENV = "ANYPOST_BENCH_TIMELINE"


def _note(kind: str, **fields: Any) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps(
        {
            "t": time.time(),
            "kind": kind,
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            **fields,
        }
    )
    # One write of a short line with O_APPEND: lines of several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _wrap_budget() -> None:
    from conformance.budget import TargetBudget

    if getattr(TargetBudget, "_timeline", False):
        return
    TargetBudget._timeline = True  # type: ignore[attr-defined]

    def sync(name: str, kind: str) -> None:
        method: Callable[..., Any] = getattr(TargetBudget, name)

        @functools.wraps(method)
        def wrapped(self: TargetBudget, *args: Any) -> Any:
            _note(kind, who=self.who)
            return method(self, *args)

        setattr(TargetBudget, name, wrapped)

    sync("confirm", "counted")
    sync("record_failure", "counted_unexpected")
    sync("release", "released")
    sync("record_block", "block")

    sleep = TargetBudget._sleep

    @functools.wraps(sleep)
    async def wrapped_sleep(self: TargetBudget, delay: float, why: str) -> None:
        _note("wait", who=self.who, delay=delay, why=why)
        await sleep(self, delay, why)
        _note("waited", who=self.who)

    TargetBudget._sleep = wrapped_sleep  # type: ignore[method-assign]

    reserve = TargetBudget.before_failing_login

    @functools.wraps(reserve)
    async def wrapped_reserve(self: TargetBudget) -> float:
        _note("reserve", who=self.who)
        got = await reserve(self)
        _note("reserved", who=self.who)
        return got

    TargetBudget.before_failing_login = wrapped_reserve  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(ENV):
        _wrap_budget()
        _note("configure")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _note("start", test=item.nodeid.split("::", 1)[-1])
    try:
        return (yield)
    finally:
        _note("end", test=item.nodeid.split("::", 1)[-1])


def pytest_collection_finish(session: pytest.Session) -> None:
    _note("collected", items=len(session.items))


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    _note("finishing")
    try:
        return (yield)
    finally:
        _note("finished")


def pytest_unconfigure(config: pytest.Config) -> None:
    _note("unconfigure")


def read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def analyse(
    events: Iterable[dict[str, Any]], started: float, ended: float, threshold: int, cooldown: float
) -> dict[str, Any]:
    """What a run's time went on: the counted failed logins, the floor any schedule pays for
    them, the budget waits, and per worker the time busy, waiting and idle."""
    events = sorted(events, key=lambda e: e["t"])
    counted = [e for e in events if e["kind"] in ("counted", "counted_unexpected")]
    failures = len(counted)
    per_window = max(threshold - 1, 1)
    # The budget lets at most threshold - 1 failures be remembered at once, each for the
    # cooldown: failure k (from 0) cannot come before floor(k / (threshold - 1)) cooldowns.
    waits_forced = (failures - 1) // per_window if failures else 0
    floor = waits_forced * cooldown
    workers: dict[str, dict[str, Any]] = {}
    for worker in sorted({e["worker"] for e in events if e["kind"] == "start"}):
        mine = [e for e in events if e["worker"] == worker]
        tests = _spans(mine, "start", "end")
        waits = _spans(mine, "wait", "waited")
        busy = sum(b - a for a, b in tests)
        waited = sum(b - a for a, b in waits)
        first, last = min(a for a, _ in tests), max(b for _, b in tests)
        workers[worker] = {
            "tests": len(tests),
            "first_start_s": round(first - started, 2),
            "last_end_s": round(last - started, 2),
            "in_tests_s": round(busy, 2),
            "budget_waits": len(waits),
            "budget_wait_s": round(waited, 2),
            "working_s": round(busy - waited, 2),
            "idle_between_tests_s": round((last - first) - busy, 2),
        }
    return {
        "counted_failed_logins": failures,
        "released_reservations": sum(1 for e in events if e["kind"] == "released"),
        "failures_admitted_per_cooldown": per_window,
        "forced_waits": waits_forced,
        "floor_s": floor,
        "first_counted_s": round(counted[0]["t"] - started, 2) if counted else None,
        "last_counted_s": round(counted[-1]["t"] - started, 2) if counted else None,
        "counted_at_s": [round(e["t"] - started, 2) for e in counted],
        "budget_wait_s": round(sum(w["budget_wait_s"] for w in workers.values()), 2),
        "workers": workers,
        "elapsed_s": round(ended - started, 2),
    }


def _spans(events: list[dict[str, Any]], begin: str, end: str) -> list[tuple[float, float]]:
    spans, opened = [], None
    for e in events:
        if e["kind"] == begin:
            opened = e["t"]
        elif e["kind"] == end and opened is not None:
            spans.append((opened, e["t"]))
            opened = None
    return spans
