"""The scenario and profile model: frozen dataclasses that know nothing of YAML or SMTP I/O."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import Location


class Level(StrEnum):
    MUST = "MUST"
    SHOULD = "SHOULD"


class Verdict(StrEnum):
    """The verdict of one scenario run (and, with "not covered", of one requirement).

    - ``passed``: every MUST expectation held (``should:`` ones may have warned).
    - ``failed``: an expectation of the behaviour under test was not met.
    - ``blocked``: a precondition or an incidental check failed (the login, the ``ids=`` of
      an accepted message in a sender scenario...): the failure is charged to the
      requirement named in ``blocked_by``, never to the scenario's own requirements.
    - ``inconclusive``: the target answered 4xx or dropped the session on a step not under
      test (throttled, temporarily unavailable): nothing was learnt.
    - ``not verified``: the scenario could not run here (a role, a value or an observer the
      profile lacks, a destructive scenario not selected, the message budget spent).
    - ``error``: a bug of the harness or of the scenario file.
    """

    PASSED = "passed"
    FAILED = "failed"
    BLOCKED = "blocked"
    INCONCLUSIVE = "inconclusive"
    NOT_VERIFIED = "not verified"
    ERROR = "error"


# Worst first: a requirement's verdict is the worst of its scenarios' at its own level.
VERDICT_ORDER: tuple[Verdict, ...] = (
    Verdict.FAILED,
    Verdict.ERROR,
    Verdict.BLOCKED,
    Verdict.INCONCLUSIVE,
    Verdict.NOT_VERIFIED,
    Verdict.PASSED,
)


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The worst of ``verdicts`` (None when there are none)."""
    present = set(verdicts)
    return next((v for v in VERDICT_ORDER if v in present), None)


def fails_run(verdict: Verdict, level: Level, strict: bool) -> bool:
    """Whether a scenario run's verdict makes the run exit 1.

    ``level`` is the level of what was judged: the scenario's level for ``failed`` and
    ``inconclusive``, SHOULD for a ``should:`` expectation under --strict, the blocking
    requirement's level for ``blocked``. Passed and not verified never fail the run; an error
    always does; the others do at MUST level, and at SHOULD level only with --strict.
    """
    if verdict in (Verdict.PASSED, Verdict.NOT_VERIFIED):
        return False
    if verdict is Verdict.ERROR:
        return True
    return level is Level.MUST or strict


@dataclass(frozen=True)
class Requirement:
    id: str
    level: Level
    text: str
    area: str


@dataclass(frozen=True)
class ReplyMatch:
    code: tuple[int, ...] | None = None
    reply_class: tuple[int, ...] | None = None
    enhanced: str | None = None
    text: str | None = None
    has_extensions: tuple[str, ...] = ()
    lacks_extensions: tuple[str, ...] = ()
    extension_values: tuple[tuple[str, str], ...] = ()
    ids_count: int | str | None = None  # an int, "recipients", or None (ids not checked)
    ids_uuidv7: bool = True
    ids_line_length: bool = True
    enhanced_every_line: bool = False
    closed: bool | None = None
    tls: bool | None = None
    no_reply: bool = False
    refused: bool | None = None

    @property
    def checks_ids(self) -> bool:
        return self.ids_count is not None

    @property
    def allows_temporary(self) -> bool:
        """Whether a 4xx reply (or a close) is among what this expectation accepts."""
        return bool(
            self.refused
            or 4 in (self.reply_class or ())
            or any(c // 100 == 4 for c in self.code or ())
            or self.closed
        )


@dataclass(frozen=True)
class Expectation:
    must: ReplyMatch
    should: ReplyMatch | None = None
    explicit: bool = True  # False: the step's default ("it succeeds")


@dataclass(frozen=True)
class Step:
    kind: str
    args: Any
    expect: Expectation
    location: Location
    name: str = ""
    steps: tuple[Step, ...] = ()  # for repeat
    # The one requirement of the scenario this step's expectation checks (``checks:``): a
    # scenario about two rules charges each step's failure to its own.
    checks: str = ""


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    requirements: tuple[str, ...]
    level: Level
    steps: tuple[Step, ...]
    location: Location
    tags: tuple[str, ...] = ()
    ports: tuple[str, ...] | None = None
    needs: tuple[str, ...] = ()
    observer: bool = False
    destructive: bool = False
    description: str = ""
    # A choice the contract leaves open that this scenario checks: it runs only when the
    # profile's policy declares these values.
    policy: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KeyRef:
    role: str
    env: str | None = None
    value: str | None = None
    allowed_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tls:
    ca_file: Path | None = None
    system: bool = False
    insecure: bool = False
    server_name: str | None = None


@dataclass(frozen=True)
class Deviation:
    scenario: str
    reason: str
    expires: date

    def matches(self, scenario_id: str) -> bool:
        return self.scenario == scenario_id or (
            self.scenario.endswith("*") and scenario_id.startswith(self.scenario[:-1])
        )


@dataclass(frozen=True)
class Profile:
    file: str
    name: str
    host: str
    ports: dict[str, int]
    tls: Tls = field(default_factory=Tls)
    timeout: float = 10.0
    scenario_deadline: float = 120.0
    helo_name: str = "conformance.anypost-harness.test"
    keys: dict[str, KeyRef] = field(default_factory=dict)
    domains: dict[str, str] = field(default_factory=dict)
    recipients: tuple[str, ...] = ()
    recipient_pattern: str | None = None  # e.g. sink+{n}@sink.test: {n} only in the local part
    limits: dict[str, float] = field(default_factory=dict)
    budget_messages: int = 500
    generated: dict[str, float] = field(default_factory=dict)  # examples, seconds, seed
    observer: dict[str, str] | None = None
    deviations: tuple[Deviation, ...] = ()
    policy: dict[str, str] = field(default_factory=dict)

    def recipient(self, n: int) -> str | None:
        """The n-th recipient (from 0): the listed ones first, then the pattern's expansions."""
        if n < len(self.recipients):
            return self.recipients[n]
        if self.recipient_pattern is None:
            return None
        return self.recipient_pattern.replace("{n}", str(n))

    @functools.cached_property
    def _listed(self) -> frozenset[str]:
        """The listed recipients, normalized once (a profile may list a hundred)."""
        return frozenset(_norm(r) for r in self.recipients)

    def may_receive(self, address: str) -> bool:
        """Whether the harness may send DATA to ``address`` (domain compared without case)."""
        local, _, domain = address.rpartition("@")
        wanted = f"{local}@{domain.lower().rstrip('.')}"
        if wanted in self._listed:
            return True
        if self.recipient_pattern is None:
            return False
        head, _, tail = _norm(self.recipient_pattern).partition("{n}")
        middle = wanted[len(head) : len(wanted) - len(tail)]
        return (
            wanted.startswith(head)
            and wanted.endswith(tail)
            and len(wanted) > len(head) + len(tail)
            and middle.isdigit()
            and middle.isascii()
        )

    def deviation_for(self, scenario_id: str) -> Deviation | None:
        return next((d for d in self.deviations if d.matches(scenario_id)), None)


# ``${root.name}`` or ``${root.name|transform}``: a transform is a name from a fixed list
# (scenario schema, ``$defs/variable_transform``), never an expression.
VARIABLE = re.compile(r"\$\{([a-z_]+(?:\.[a-z0-9_]+)*)(?:\|([a-z_]+))?\}")


def _norm(address: str) -> str:
    local, _, domain = address.strip("<>").rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"
