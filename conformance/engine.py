"""Run one scenario on one port of a target, and grade it.

Verdicts: passed; failed (a MUST expectation, or any expectation of a MUST-level scenario's
SHOULD block under --strict); not verified (a missing role, no observer, budget spent, a
destructive scenario not selected); inconclusive (the target throttled or dropped us for reasons
not under test: a 421 outside a block scenario); error (a bug of the harness).
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from dataclasses import dataclass, field, replace

from .budget import TargetBudget
from .driver import Driver, tls_context
from .errors import BudgetError, ScenarioError, TransportError
from .expect import Observation, ids_of, judge
from .loader import DEFAULT_EXPECT
from .model import Expectation, Level, Profile, ReplyMatch, Scenario, Step, Verdict
from .reply import Reply
from .steps import REGISTRY, Context, NotVerified
from .transcript import Redactor, Transcript


@dataclass(frozen=True)
class Failure:
    step: str
    location: str
    level: Level
    problems: tuple[str, ...]
    transcript_at: int  # index into the transcript entries


@dataclass(frozen=True)
class StepRecord:
    """One step as it went on the wire, for reports that read like the exchange."""

    title: str  # the step and the first line it sent, e.g. "mail: MAIL FROM:<probe@acme.test>"
    verdict: str  # ok, failed, SHOULD not met
    reply: str  # the reply that was judged, or what happened instead
    lines: tuple[str, ...]  # the transcript lines of the step (redacted)


@dataclass
class Outcome:
    scenario: Scenario
    port: str
    verdict: Verdict = Verdict.PASSED
    reason: str = ""
    failures: list[Failure] = field(default_factory=list)
    should_failures: list[Failure] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    duration: float = 0.0
    steps_run: list[StepRecord] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.scenario.id} [{self.port}]: {self.verdict.value}"]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        for failure in self.failures + self.should_failures:
            lines.append(f"  {failure.level.value} step '{failure.step}' ({failure.location}):")
            lines += [f"    - {p}" for p in failure.problems]
        return "\n".join(lines)


class _Stop(Exception):
    """A MUST expectation failed: later steps depend on it, so the scenario ends here."""


class _Inconclusive(Exception):
    pass


def budget_for(profile: Profile) -> TargetBudget:
    threshold = profile.limits.get("auth_failure_threshold")
    return TargetBudget(
        f"{profile.host}:{sorted(profile.ports.values())}",
        None if threshold is None else int(threshold),
        profile.limits.get("auth_failure_cooldown"),
        profile.budget_messages,
    )


def _secrets(profile: Profile) -> list[str]:
    found = []
    for key in profile.keys.values():
        if key.env and os.environ.get(key.env):
            found.append(os.environ[key.env])
    return found


async def run_scenario(
    scenario: Scenario,
    profile: Profile,
    port: str,
    include_destructive: bool = False,
    strict: bool = False,
) -> Outcome:
    transcript = Transcript(Redactor(_secrets(profile)))
    outcome = Outcome(scenario, port, transcript=transcript)
    started = time.monotonic()
    if scenario.destructive and not include_destructive:
        outcome.verdict = Verdict.NOT_VERIFIED
        outcome.reason = "destructive scenario: run with --include-destructive to select it"
        return outcome
    if port not in profile.ports:
        outcome.verdict = Verdict.NOT_VERIFIED
        outcome.reason = f"the profile has no port named {port}"
        return outcome
    if scenario.observer and profile.observer is None:
        outcome.verdict = Verdict.NOT_VERIFIED
        outcome.reason = "needs an observer to read delivered copies; the profile has none"
        return outcome
    budget = budget_for(profile)
    budget.who = f"{scenario.id} [{port}]"
    ca = str(profile.tls.ca_file) if profile.tls.ca_file else None
    driver = Driver(
        profile.host,
        profile.ports[port],
        profile.timeout,
        transcript,
        lambda: tls_context(ca, profile.tls.system, profile.tls.insecure),
        profile.tls.server_name,
    )
    ctx = Context(profile, port, driver, transcript, budget, scenario.destructive)
    cooldown = float(profile.limits.get("auth_failure_cooldown") or 0)
    deadline = profile.scenario_deadline + cooldown * (2 + _count_auth(scenario.steps))
    try:
        async with budget.exclusive(scenario.destructive):
            try:
                await asyncio.wait_for(_run_steps(ctx, scenario, outcome, strict), deadline)
            except TimeoutError:
                outcome.verdict = Verdict.FAILED
                outcome.reason = f"the scenario did not finish within its deadline of {deadline:g}s"
                transcript.event(outcome.reason)
            finally:
                await _finish(driver)
                if scenario.destructive:
                    budget.record_block()
    except Exception:  # a bug of the harness: say so, never pass
        outcome.verdict = Verdict.ERROR
        outcome.reason = transcript.redact(traceback.format_exc())
    outcome.duration = time.monotonic() - started
    return outcome


async def _finish(driver: Driver) -> None:
    try:
        await asyncio.wait_for(driver.finish(), driver.timeout + 1)
    except (TimeoutError, TransportError):
        driver.abort()


def _count_auth(steps: tuple[Step, ...]) -> int:
    """Logins a scenario may make, for its deadline: each may wait out one cooldown of the
    auth-failure budget. A repeat counts as up to ten times its logins (it repeats at most the
    block threshold, which the profile keeps small)."""
    return sum(
        (1 if s.kind == "auth" else 0) + (_count_auth(s.steps) * 10 if s.kind == "repeat" else 0)
        for s in steps
    )


async def _run_steps(ctx: Context, scenario: Scenario, outcome: Outcome, strict: bool) -> None:
    async def run_step(s: Step) -> None:
        await _run_step(ctx, scenario, s, outcome)

    ctx.run_step = run_step
    try:
        await ctx.budget.wait_unblocked()
        if scenario.steps[0].kind not in ("connect", "reconnect"):
            implicit = Step("connect", None, _default_connect(), scenario.location, "connect")
            await run_step(implicit)
        for s in scenario.steps:
            await run_step(s)
    except _Stop:
        outcome.verdict = Verdict.FAILED
        return
    except (_Inconclusive, NotVerified, BudgetError, ScenarioError) as exc:
        outcome.verdict = next(v for kind, v in _ENDINGS if isinstance(exc, kind))
        outcome.reason = str(exc)
        return
    if outcome.failures or (outcome.should_failures and (strict or scenario.level is Level.SHOULD)):
        outcome.verdict = Verdict.FAILED


# How a scenario that ends early is graded, by what ended it.
_ENDINGS: tuple[tuple[type[Exception], Verdict], ...] = (
    (_Inconclusive, Verdict.INCONCLUSIVE),
    (NotVerified, Verdict.NOT_VERIFIED),
    (BudgetError, Verdict.NOT_VERIFIED),  # the message budget is spent
    (ScenarioError, Verdict.ERROR),
)


def _default_connect() -> Expectation:
    match = DEFAULT_EXPECT["connect"]
    assert match is not None
    return Expectation(match, None, explicit=False)


def _allows_421(s: Step) -> bool:
    for match in (s.expect.must, s.expect.should):
        if match is None:
            continue
        if (match.code and 421 in match.code) or 4 in (match.reply_class or ()) or match.refused:
            return True
    return False


async def _run_step(ctx: Context, scenario: Scenario, s: Step, outcome: Outcome) -> None:
    executor = REGISTRY[s.kind]
    at = len(ctx.transcript)
    try:
        observation = await executor(ctx, s)
    except TransportError as exc:
        observation = Observation(
            reply=None,
            closed=not ctx.driver.connected,
            tls=ctx.driver.tls,
            error=exc.message,
            accepted_recipients=len(ctx.recipients),
        )
    if s.kind == "repeat":
        return
    if s.expect.must.closed and not observation.closed:
        closed = await ctx.driver.wait_closed(ctx.profile.timeout)
        observation = Observation(
            observation.reply,
            closed,
            observation.tls,
            observation.error,
            observation.accepted_recipients,
            observation.seen_ids,
        )
    reply = observation.reply
    if reply is not None and reply.code == 421 and not scenario.destructive and not _allows_421(s):
        ctx.transcript.event("421: the target throttled or dropped the session")
        raise _Inconclusive(f"the target answered 421 at step '{s.describe()}': {reply}")
    must = judge(_resolved(ctx, s.expect.must), observation)
    # A transport error fails the step unless the step was about the connection ending.
    about_closing = s.expect.must.closed is not None or s.expect.must.refused is not None
    if (
        observation.error
        and not must
        and (s.kind == "observe" or (reply is None and not about_closing))
    ):
        must.append(observation.error)
    location = str(s.location)
    if must:
        level = scenario.level
        outcome.failures.append(Failure(s.describe(), location, level, tuple(must), at))
        outcome.steps_run.append(_record(ctx, s, at, observation, "failed"))
        raise _Stop()
    if s.expect.should is not None:
        should = judge(_resolved(ctx, s.expect.should), observation)
        if should:
            outcome.should_failures.append(
                Failure(s.describe(), location, Level.SHOULD, tuple(should), at)
            )
            outcome.steps_run.append(_record(ctx, s, at, observation, "SHOULD not met"))
            _remember_ids(ctx, reply)
            return
    outcome.steps_run.append(_record(ctx, s, at, observation, "ok"))
    _remember_ids(ctx, reply)


def _record(ctx: Context, s: Step, at: int, observation: Observation, verdict: str) -> StepRecord:
    entries = ctx.transcript.entries[at:]
    sent = next((e.text.split("\n")[0] for e in entries if e.direction == ">"), "")
    title = f"{s.kind}: {sent}" if sent else s.describe()
    if observation.reply is not None:
        reply = str(observation.reply)
        reply = reply if len(reply) <= 120 else reply[:117] + "..."
    else:
        reply = observation.error or ("connection closed" if observation.closed else "no reply")
    return StepRecord(title, verdict, reply, tuple(f"{e.direction} {e.text}" for e in entries))


def _resolved(ctx: Context, match: ReplyMatch) -> ReplyMatch:
    """The expectation with profile variables filled in (SIZE values, text patterns)."""
    if not match.extension_values and not match.text:
        return match
    return replace(
        match,
        text=ctx.resolve(match.text),
        extension_values=tuple((k, ctx.resolve(v)) for k, v in match.extension_values),
    )


def _remember_ids(ctx: Context, reply: object) -> None:
    if isinstance(reply, Reply) and reply.code == 250:
        ids = ids_of(reply)
        if ids:
            ctx.seen_ids.update(ids)
