"""The auth-failure budget never lets non-destructive probes trip the block."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from conformance.budget import TargetBudget
from conformance.errors import BudgetError


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path))


def test_budget_waits_before_the_failure_that_would_trip_the_block() -> None:
    budget = TargetBudget("t", threshold=3, cooldown=0.5, messages=10)
    other_worker = TargetBudget("t", threshold=3, cooldown=0.5, messages=10)  # same file

    async def go() -> list[float]:
        started = time.monotonic()
        await budget.before_failing_login()
        await other_worker.before_failing_login()
        at_third = time.monotonic() - started
        await budget.before_failing_login()  # 3 in the window would trip: waits a failure out
        return [at_third, time.monotonic() - started]

    at_third, after = asyncio.run(go())
    assert at_third < 0.2 and after >= 0.5


def test_budget_release_returns_a_reservation() -> None:
    budget = TargetBudget("r", threshold=2, cooldown=30, messages=10)

    async def go() -> float:
        reservation = await budget.before_failing_login()
        budget.release(reservation)  # the login was refused before credentials were judged
        started = time.monotonic()
        await budget.before_failing_login()
        return time.monotonic() - started

    assert asyncio.run(go()) < 0.2


def test_budget_confirmed_failure_counts_from_its_reply() -> None:
    """A target that judges a login late (loaded, or far away) remembers it from then: the
    budget counts a confirmed failure from the reply, not from the reservation."""
    budget = TargetBudget("c", threshold=2, cooldown=0.6, messages=10)

    async def go() -> float:
        reservation = await budget.before_failing_login()
        await asyncio.sleep(0.4)  # the target took this long to answer 535
        budget.confirm(reservation)
        started = time.monotonic()
        await budget.before_failing_login()  # must wait until the reply + cooldown
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.55


def test_budget_block_and_message_budget() -> None:
    budget = TargetBudget("b", threshold=3, cooldown=0.3, messages=2)
    budget.record_block()

    async def go() -> float:
        started = time.monotonic()
        await budget.wait_unblocked()
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.3
    budget.spend_message()
    budget.spend_message()
    with pytest.raises(BudgetError, match="message budget"):
        budget.spend_message()
    with pytest.raises(BudgetError, match="first failed login"):
        asyncio.run(TargetBudget("one", threshold=1, cooldown=1, messages=1).before_failing_login())


def test_message_budget_is_exact_across_concurrent_workers() -> None:
    # Eight workers (threads, each with its own budget object, as xdist workers have) spend
    # 40 messages against a budget of 25: exactly 25 are admitted, whatever the interleaving.
    admitted: list[int] = []

    def worker() -> None:
        budget = TargetBudget("shared", threshold=None, cooldown=None, messages=25, run_id="r")
        for _ in range(5):
            try:
                budget.spend_message()
                admitted.append(1)
            except BudgetError:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 25
    # Another run of the same target has a budget of its own.
    TargetBudget("shared", threshold=None, cooldown=None, messages=25, run_id="r2").spend_message()
