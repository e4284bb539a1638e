"""Which scenarios spend the target's auth-failure budget, so a parallel run can give them a
lane of their own.

A scenario with a login that may fail (a bad key, a wrong username, a payload, AUTH before TLS)
reserves a place in the budget and, when the budget is full, waits the cooldown out. Run on
every worker, those waits stall every worker; run in one lane that starts first (one
pytest-xdist group), they overlap the rest of the catalogue on the other workers. Results do
not depend on it: the budget is shared through its state file whatever runs where.
"""

from __future__ import annotations

from .model import Scenario, Step
from .steps import expects_failed_login

BUDGET_GROUP = "anypost-auth-budget"
DESTRUCTIVE_GROUP = "anypost-destructive"


def _may_fail_login(steps: tuple[Step, ...]) -> bool:
    for s in steps:
        if s.kind in ("auth", "login") and expects_failed_login(s):
            return True
        if s.kind == "repeat" and _may_fail_login(s.steps):
            return True
    return False


def failing_logins(steps: tuple[Step, ...]) -> int:
    """How many logins of these steps may fail (a repeat's counted once: only destructive
    scenarios repeat logins, and they hold the target alone)."""
    return sum(
        (1 if s.kind in ("auth", "login") and expects_failed_login(s) else 0)
        + (failing_logins(s.steps) if s.kind == "repeat" else 0)
        for s in steps
    )


def consumes_budget(scenario: Scenario) -> bool:
    """True when the scenario may make a failed login (destructive ones aside: they hold the
    target alone anyway)."""
    return not scenario.destructive and _may_fail_login(scenario.steps)


def lane(scenario: Scenario) -> str | None:
    """The pytest-xdist group a scenario runs in (None: any worker, one at a time)."""
    if scenario.destructive:
        return DESTRUCTIVE_GROUP
    return BUDGET_GROUP if consumes_budget(scenario) else None


def order_key(scenario: Scenario, parallel: bool) -> tuple[int, int]:
    """Destructive scenarios last, always. In a parallel run, the budget lane first, so its
    waits start while the other workers have the whole rest to run."""
    return (int(scenario.destructive), 0 if parallel and consumes_budget(scenario) else 1)
