"""Run one scenario on one port of a target, and grade it.

Verdicts (``model.Verdict``):
- passed;
- failed: an expectation of the behaviour under test was not met (a ``should:`` one only with
  --strict); the outcome's ``level`` says at which level it failed;
- blocked: a step the scenario does not test failed (a precondition: a step without
  ``expect``, or a stage of ``login``), or an incidental check did (the ``ids=`` of an accepted
  message in a scenario that does not name IDS-1): ``blocked_by`` names the requirement charged,
  and the scenario's own requirements are not;
- inconclusive: a 4xx the expectation did not allow, or a dropped connection on a step not
  under test (the target throttled or dropped us; a destructive scenario tests exactly that);
- not verified: a missing role, value or observer, the budget spent, a destructive scenario
  not selected;
- error: a bug of the harness or of the scenario.

Whether a verdict fails the run is ``model.fails_run`` (``Outcome.fails_run``).
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .budget import TargetBudget
from .driver import Driver, tls_context
from .errors import BudgetError, ScenarioError, TransportError
from .expect import (
    CHECK_ENHANCED,
    CHECK_IDS,
    CHECK_IDS_NEW,
    CHECK_IDS_UNIQUE,
    CHECK_LINE_LENGTH,
    CHECK_REPLY,
    Observation,
    ids_of,
    judge,
    judge_checks,
    judge_id_form,
)
from .idregistry import IdRegistry
from .loader import DEFAULT_EXPECT
from .model import (
    Expectation,
    Level,
    Profile,
    ReplyMatch,
    Scenario,
    Step,
    Verdict,
    fails_run,
)
from .reply import Reply
from .schedule import failing_logins
from .steps import (
    REGISTRY,
    Context,
    GenerationSettings,
    NotVerified,
    PreconditionFailed,
    no_tls_offered,
)
from .transcript import Redactor, Transcript


@dataclass(frozen=True)
class Failure:
    step: str
    location: str
    level: Level
    problems: tuple[str, ...]
    transcript_at: int  # index into the transcript entries
    requirement: str | None = None  # a wire rule's own id (RFC-9...); None: the scenario's

    def __post_init__(self) -> None:
        # A problem quotes what the server said; however much that was, a report shows a
        # bounded part of it (the transcript has each line, capped too).
        capped = tuple(
            p if len(p) <= PROBLEM_CAP else f"{p[:PROBLEM_CAP]}... [{len(p)} characters in all]"
            for p in self.problems
        )
        object.__setattr__(self, "problems", capped)


PROBLEM_CAP = 1024


@dataclass(frozen=True)
class StepRecord:
    """One step as it went on the wire, for reports that read like the exchange."""

    title: str  # the step and the first line it sent, e.g. "mail: MAIL FROM:<probe@acme.test>"
    verdict: str  # ok, failed, SHOULD not met
    reply: str  # the reply that was judged, or what happened instead
    lines: tuple[str, ...]  # the transcript lines of the step (redacted)


@dataclass
class Outcome:
    """One scenario run on one port: its verdict and the evidence.

    ``level`` is the level of what decided the verdict (the scenario's level, SHOULD for a
    ``should:`` expectation under --strict, the blocking requirement's level when blocked);
    ``blocked_by`` the requirement a blocked scenario is charged to.
    """

    scenario: Scenario
    port: str
    verdict: Verdict = Verdict.PASSED
    reason: str = ""
    failures: list[Failure] = field(default_factory=list)
    should_failures: list[Failure] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    duration: float = 0.0
    steps_run: list[StepRecord] = field(default_factory=list)
    blocked_by: str | None = None
    level: Level | None = None  # None: the scenario's level
    # A failed run of a scenario naming several requirements, whose failure belongs to one of
    # them (the ids= check of a submission scenario naming TLS-1 and IDS-1): only that one
    # failed; the others passed if the failure was at the last step, else were blocked.
    charged_to: str | None = None
    unfinished: bool = False

    @property
    def judged_level(self) -> Level:
        return self.level or self.scenario.level

    def fails_run(self, strict: bool) -> bool:
        return fails_run(self.verdict, self.judged_level, strict)

    def summary(self) -> str:
        head = f"{self.scenario.id} [{self.port}]: {self.verdict.value}"
        if self.blocked_by:
            head += f" by {self.blocked_by}"
        lines = [head]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        for failure in self.failures + self.should_failures:
            rule = f" [{failure.requirement}]" if failure.requirement else ""
            lines.append(
                f"  {failure.level.value}{rule} step '{failure.step}' ({failure.location}):"
            )
            lines += [f"    - {p}" for p in failure.problems]
        return "\n".join(lines)


class _Stop(Exception):
    """A MUST expectation failed: later steps depend on it, so the scenario ends here."""


class _Inconclusive(Exception):
    pass


class _Blocked(Exception):
    """A precondition or an incidental check failed; charged to ``requirement``."""

    def __init__(self, requirement: str, level: Level, reason: str) -> None:
        super().__init__(requirement, level, reason)
        self.requirement = requirement
        self.level = level
        self.reason = reason


# The requirement a failed step is charged to when the scenario does not test it: what the
# catalogue's requirements say each step needs (scenarios/requirements.yaml).
PRECONDITION_OF: dict[str, str] = {
    "connect": "SESSION-1",
    "reconnect": "SESSION-1",
    "ehlo": "SESSION-1",
    "helo": "SESSION-1",
    "starttls": "TLS-1",
    "auth": "AUTH-2",
    "login": "AUTH-2",
    "mail": "SENDER-1",
    "rcpt": "SESSION-3",
    "data": "SESSION-3",
    "rset": "SESSION-2",
    "noop": "SESSION-2",
    "observe": "HDR-1",
}
# Checks that belong to a requirement of their own, and its level: when a scenario that does
# not name it sees one fail (the ids= of a message accepted in a sender scenario), the
# scenario is blocked by that requirement.
INCIDENTAL: dict[str, tuple[str, Level]] = {
    CHECK_IDS: ("IDS-1", Level.MUST),
    CHECK_IDS_UNIQUE: ("IDS-2", Level.MUST),
    CHECK_IDS_NEW: ("IDS-3", Level.MUST),
    CHECK_LINE_LENGTH: ("RFC-5", Level.MUST),
    CHECK_ENHANCED: ("RFC-3", Level.SHOULD),
}


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
    for name, value in scenario.policy:
        declared = profile.policy.get(name)
        if declared != value:
            outcome.verdict = Verdict.NOT_VERIFIED
            outcome.reason = (
                f"checks the choice policy.{name}: {value}, where the contract is silent; "
                + (
                    f"the profile declares {declared}"
                    if declared
                    else f"the profile declares no policy.{name}"
                )
            )
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
    ids = IdRegistry(f"{profile.host}:{sorted(profile.ports.values())}")
    ctx = Context(profile, port, driver, transcript, budget, ids, scenario.destructive)
    ctx.generation = GenerationSettings.from_environment(profile)
    cooldown = float(profile.limits.get("auth_failure_cooldown") or 0)
    deadline = profile.scenario_deadline + cooldown * (2 + _count_auth(scenario.steps))
    try:
        async with budget.exclusive(scenario.destructive):
            try:
                # In this task (asyncio.timeout), not in a task of its own (wait_for).
                async with asyncio.timeout(deadline):
                    await _run_steps(ctx, scenario, outcome, strict)
            except TimeoutError:
                outcome.verdict = Verdict.FAILED
                outcome.reason = f"the scenario did not finish within its deadline of {deadline:g}s"
                transcript.event(outcome.reason)
            finally:
                await _finish(driver)
                _wire_failures(ctx, "end of session (QUIT)", str(scenario.location), outcome)
                _grade_wire(outcome, strict)
                if scenario.destructive:
                    budget.record_block()
    except Exception:  # a bug of the harness: say so, never pass
        outcome.verdict = Verdict.ERROR
        outcome.reason = transcript.redact(traceback.format_exc())
    outcome.duration = time.monotonic() - started
    return outcome


async def _finish(driver: Driver) -> None:
    try:
        async with asyncio.timeout(driver.timeout + 1):
            await driver.finish()
    except (TimeoutError, TransportError):
        driver.abort()


def _grade_wire(outcome: Outcome, strict: bool) -> None:
    """Breaches of the wire rules do not stop a scenario (its steps are still judged); they
    fail it at the end, at their own level."""
    if outcome.verdict is not Verdict.PASSED:
        return
    if any(f.requirement for f in outcome.failures):
        outcome.verdict, outcome.level = Verdict.FAILED, Level.MUST
    elif any(f.requirement for f in outcome.should_failures) and (
        strict or outcome.scenario.level is Level.SHOULD
    ):
        outcome.verdict, outcome.level = Verdict.FAILED, Level.SHOULD


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

    async def judge_step(s: Step, seen: Observation | TransportError) -> None:
        await _run_step(ctx, scenario, s, outcome, seen)

    ctx.run_step = run_step
    ctx.judge_step = judge_step
    try:
        if not scenario.destructive:
            # Any cooldown is waited out before the session opens, not inside it (a target
            # may close an idle session sooner than its cooldown ends).
            await ctx.budget.wait_for_room(failing_logins(scenario.steps))
        # The first step is a connect (implicit or not), which waits out a block first.
        if scenario.steps[0].kind not in ("connect", "reconnect"):
            implicit = Step("connect", None, _default_connect(), scenario.location)
            await run_step(implicit)
        for s in scenario.steps:
            await run_step(s)
    except _Stop:
        outcome.verdict = Verdict.FAILED
        return
    except _Blocked as exc:
        outcome.verdict = Verdict.BLOCKED
        outcome.blocked_by = exc.requirement
        outcome.level = exc.level
        outcome.reason = exc.reason
        return
    except (_Inconclusive, NotVerified, BudgetError, ScenarioError) as exc:
        outcome.verdict = next(v for kind, v in _ENDINGS if isinstance(exc, kind))
        outcome.reason = str(exc)
        return
    if outcome.should_failures and (strict or scenario.level is Level.SHOULD):
        # A should: expectation is SHOULD whatever the scenario's level: it fails the run only
        # under --strict (model.fails_run), and never a MUST requirement.
        outcome.verdict = Verdict.FAILED
        outcome.level = Level.SHOULD


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


async def _run_step(
    ctx: Context,
    scenario: Scenario,
    s: Step,
    outcome: Outcome,
    seen: Observation | TransportError | None = None,
) -> None:
    """Run a step and judge it; with ``seen``, only judge what a pipelined group observed."""
    executor = REGISTRY[s.kind]
    at = len(ctx.transcript)
    dropped = False
    try:
        if isinstance(seen, TransportError):
            raise seen
        observation = await executor(ctx, s) if seen is None else seen
    except PreconditionFailed as exc:
        _precondition(ctx, scenario, s, outcome, at, exc.requirement, exc.reason, exc.temporary)
        return
    except TransportError as exc:
        dropped = exc.dropped
        observation = Observation(
            reply=None,
            closed=not ctx.driver.connected,
            tls=ctx.driver.tls,
            error=exc.message,
            accepted_recipients=len(ctx.recipients),
        )
    label = step_label(ctx, s, at)
    _wire_failures(ctx, label, str(s.location), outcome, at)
    if s.kind in ("repeat", "pipeline"):
        return  # their steps were judged one by one
    if s.expect.must.closed and not observation.closed:
        closed = await ctx.driver.wait_closed(ctx.profile.timeout)
        observation = replace(observation, closed=closed)
    reply = observation.reply
    must = s.expect.must
    # A step is under test when it says what it expects, when the scenario names the
    # requirement the step serves (the RSET of a SESSION-2 scenario), and in a destructive
    # scenario (the block refuses, closes and answers 421 anywhere: that is what it tests).
    # Any other step is a precondition: its failure blocks the scenario, or is inconclusive.
    under_test = (
        s.expect.explicit
        or PRECONDITION_OF.get(s.kind) in scenario.requirements
        or scenario.destructive
    )
    # A refused STARTTLS that the EHLO never offered is no transient (steps.no_tls_offered).
    standing = s.kind == "starttls" and no_tls_offered(ctx, reply)
    temporary = (reply is not None and reply.reply_class == 4 and not standing) or (
        reply is None and dropped and not under_test
    )
    if temporary and not scenario.destructive and not must.allows_temporary:
        # RFC 5321 §4.2.1: 4yz is a transient failure, a reason of the target's own (load,
        # throttling, a backend away); it says nothing of the behaviour under test. A
        # destructive scenario tests exactly the 421 of the block, so judges it.
        what = str(reply) if reply is not None else (observation.error or "the session ended")
        ctx.transcript.event("a transient failure on a step the expectation did not allow for")
        outcome.steps_run.append(_record(ctx, s, at, observation, "inconclusive", title=label))
        raise _Inconclusive(f"the target answered {what} at step '{label}'")
    checks = judge_checks(_resolved(ctx, must), observation)
    # A transport error fails the step unless the step was about the connection ending.
    about_closing = must.closed is not None or must.refused is not None
    if (
        observation.error
        and not checks
        and (s.kind == "observe" or (reply is None and not about_closing))
    ):
        checks.append((CHECK_REPLY, observation.error))
    if observation.plaintext_judgement:
        checks.append((CHECK_REPLY, observation.plaintext_judgement))
    location = str(s.location)
    if checks:
        if not under_test and not observation.plaintext_judgement:
            requirement = PRECONDITION_OF.get(s.kind)
            if requirement is not None:
                problems = tuple(text for _, text in checks)
                outcome.failures.append(Failure(label, location, Level.MUST, problems, at))
                outcome.steps_run.append(_record(ctx, s, at, observation, "blocked", title=label))
                raise _Blocked(
                    requirement,
                    Level.MUST,
                    f"the step '{label}' (not under test) failed: {problems[0]}",
                )
        own = [(c, t) for c, t in checks if not _incidental(c, scenario)]
        if not own and not scenario.destructive:
            requirement, level = INCIDENTAL[checks[0][0]]
            problems = tuple(text for _, text in checks)
            outcome.failures.append(Failure(label, location, level, problems, at))
            outcome.steps_run.append(_record(ctx, s, at, observation, "blocked", title=label))
            raise _Blocked(
                requirement,
                level,
                f"an incidental check of {requirement} at step '{label}' failed: {problems[0]}",
            )
        level = scenario.level
        problems = tuple(text for _, text in checks)
        outcome.failures.append(Failure(label, location, level, problems, at))
        outcome.steps_run.append(_record(ctx, s, at, observation, "failed", title=label))
        owners = {_owner(check, s, scenario) for check, _ in checks}
        if len(owners) == 1:
            _charge(outcome, scenario, s, owners.pop())
        raise _Stop()
    should = judge_id_form(must, observation)
    if s.expect.should is not None:
        should = judge(_resolved(ctx, s.expect.should, must=False), observation) + should
    if should:
        outcome.should_failures.append(Failure(label, location, Level.SHOULD, tuple(should), at))
        outcome.steps_run.append(_record(ctx, s, at, observation, "SHOULD not met", title=label))
        _remember_ids(ctx, reply)
        return
    outcome.steps_run.append(_record(ctx, s, at, observation, "ok", title=label))
    _remember_ids(ctx, reply)


def _wire_failures(
    ctx: Context, step: str, location: str, outcome: Outcome, at: int | None = None
) -> None:
    """What the server got wrong on the wire during a step, each a failure of its own rule;
    the scenario goes on (the step's own expectation is judged as usual)."""
    violations = ctx.driver.take_violations()
    if not violations:
        return
    where = len(ctx.transcript) - 1 if at is None else at
    by_rule: dict[tuple[str, Level], list[str]] = {}
    for v in violations:
        by_rule.setdefault((v.requirement, v.level), []).append(v.text)
    for (rule, level), problems in by_rule.items():
        failure = Failure(step, location, level, tuple(problems), where, rule)
        (outcome.failures if level is Level.MUST else outcome.should_failures).append(failure)


def _owner(check: str, s: Step, scenario: Scenario) -> str | None:
    """The requirement a failed check belongs to, when it is not the scenario's behaviour as a
    whole: an incidental check's, or the requirement an unannotated step serves."""
    if check in INCIDENTAL:
        return INCIDENTAL[check][0]
    if s.checks:
        return s.checks
    if not s.expect.explicit:
        return PRECONDITION_OF.get(s.kind)
    return None


def _charge(outcome: Outcome, scenario: Scenario, s: Step, requirement: str | None) -> None:
    """Charge a failure to one of the scenario's several requirements (``Outcome.charged_to``)."""
    if requirement is None or len(scenario.requirements) < 2:
        return
    if requirement not in scenario.requirements:
        return
    outcome.charged_to = requirement
    outcome.unfinished = not scenario.steps or s is not scenario.steps[-1]


def _incidental(check: str, scenario: Scenario) -> bool:
    """Whether a failed check belongs to a requirement other than the scenario's own."""
    owner = INCIDENTAL.get(check)
    return owner is not None and owner[0] not in scenario.requirements


def _precondition(
    ctx: Context,
    scenario: Scenario,
    s: Step,
    outcome: Outcome,
    at: int,
    requirement: str,
    reason: str,
    temporary: bool,
) -> None:
    """A step could not be done for a reason it does not test (a stage of ``login``)."""
    observation = Observation(reply=None, closed=not ctx.driver.connected, tls=ctx.driver.tls)
    if temporary and not scenario.destructive:
        outcome.steps_run.append(_record(ctx, s, at, observation, "inconclusive", reason))
        raise _Inconclusive(f"{reason} (at step '{step_label(ctx, s, at)}')")
    failure = Failure(step_label(ctx, s, at), str(s.location), Level.MUST, (reason,), at)
    outcome.failures.append(failure)
    if requirement in scenario.requirements or scenario.destructive:
        outcome.steps_run.append(_record(ctx, s, at, observation, "failed", reason))
        _charge(outcome, scenario, s, requirement)
        raise _Stop()
    outcome.steps_run.append(_record(ctx, s, at, observation, "blocked", reason))
    raise _Blocked(requirement, Level.MUST, f"{reason} (at step '{step_label(ctx, s, at)}')")


def step_label(ctx: Context, s: Step, at: int) -> str:
    """A step as it went on the wire: its ``name``, or the command it sent
    (``MAIL FROM:<probe@acme.test>``); in a composite step the last command, the one whose reply
    was judged or failed (``login: AUTH PLAIN <redacted...>``). Its file:line goes beside it."""
    if s.name:
        return s.name
    if s.kind in _OWN_LABEL:
        return _OWN_LABEL[s.kind](ctx, s, at)
    sent = [e.text.split("\n")[0] for e in ctx.transcript.entries[at:] if e.direction == ">"]
    sent = [_cut(line, 120) for line in sent if line]
    if not sent:
        # Never the step's arguments as a dict: say that nothing went on the wire.
        if ctx.transcript.omitted:
            return s.kind  # the transcript is capped: what was sent is not known here
        if s.kind == "raw":
            return "raw: nothing sent, listening for a reply no command asked for"
        return f"{s.kind} (nothing sent)"
    if s.kind in ("login", "auth", "repeat") and len(sent) > 1:
        return f"{s.kind}: {sent[-1]}"
    if s.kind == "data":
        return " ".join(sent[:2])  # DATA [message: N octets]
    return sent[0] if len(sent) == 1 else f"{sent[0]} (+{len(sent) - 1} more lines)"


def _connect_label(ctx: Context, s: Step, at: int) -> str:
    """``connect 127.0.0.1:2525`` (the address the step connected to, from its transcript)."""
    opened = next(
        (
            e.text
            for e in ctx.transcript.entries[at:]
            if e.direction == "*" and e.text.startswith("connect ")
        ),
        None,
    )
    where = opened.removeprefix("connect ") if opened else f"{ctx.driver.host}:{ctx.driver.port}"
    port = (s.args or {}).get("port") if isinstance(s.args, dict) else None
    return f"{s.kind} {where}" + (f" (port {port})" if port else "")


def _observe_label(ctx: Context, s: Step, at: int) -> str:
    """What was checked of the delivered copy: ``observe the delivered copy of <id>: lacks
    X-Anypost-Tag; has From; body contains 'Hello'``."""
    args = s.args if isinstance(s.args, dict) else {}
    checks = []
    if args.get("lacks_headers"):
        checks.append(f"lacks {', '.join(map(str, args['lacks_headers']))}")
    if args.get("has_headers"):
        checks.append(f"has {', '.join(map(str, args['has_headers']))}")
    if args.get("body_contains") is not None:
        checks.append(f"body contains {_cut(repr(str(args['body_contains'])), 80)}")
    copy = (
        f"the delivered copy of {ctx.last_message_id}"
        if ctx.last_message_id
        else "the delivered copy"
    )
    return f"observe {copy}" + (f": {'; '.join(checks)}" if checks else "")


def _wait_label(ctx: Context, s: Step, at: int) -> str:
    seconds = s.args.get("for") if isinstance(s.args, dict) else None
    if seconds == "cooldown":
        cooldown = ctx.profile.limits.get("auth_failure_cooldown")
        return "wait out the auth-failure cooldown" + (
            f" ({float(cooldown) + 0.5:g}s)" if cooldown is not None else ""
        )
    return f"wait {seconds:g}s" if isinstance(seconds, int | float) else f"wait {seconds}"


def _generate_label(ctx: Context, s: Step, at: int) -> str:
    """The property, and how many examples went out (``hypothesis seed 7: 60 examples``)."""
    args = s.args if isinstance(s.args, dict) else {}
    ran = next(
        (
            e.text.split(" (rerun")[0]
            for e in ctx.transcript.entries[at:]
            if e.direction == "*" and e.text.startswith("hypothesis seed")
        ),
        None,
    )
    head = f"generate: {args.get('family', '?')} headers, property-based"
    return head + (f" ({ran})" if ran else "")


# Steps whose label is not the first command they sent.
_OWN_LABEL: dict[str, Callable[[Context, Step, int], str]] = {
    "connect": _connect_label,
    "reconnect": _connect_label,
    "observe": _observe_label,
    "wait": _wait_label,
    "generate": _generate_label,
}


def _record(
    ctx: Context,
    s: Step,
    at: int,
    observation: Observation,
    verdict: str,
    what: str | None = None,
    title: str | None = None,
) -> StepRecord:
    """``title``: the step's label when the caller has it already (``step_label``)."""
    entries = ctx.transcript.entries[at:]
    title = title or step_label(ctx, s, at)
    if observation.reply is not None:
        reply = str(observation.reply)
        reply = reply if len(reply) <= 120 else reply[:117] + "..."
    else:
        reply = (
            what or observation.error or ("connection closed" if observation.closed else "no reply")
        )
    lines = tuple(f"{e.direction} {_cut(e.text, STEP_LINE)}" for e in entries)
    return StepRecord(title, verdict, reply, lines)


STEP_LINE = 240  # characters of a transcript line in a step record (the transcript has it all)


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _resolved(ctx: Context, match: ReplyMatch, must: bool = True) -> ReplyMatch:
    """The expectation with profile variables filled in (SIZE values, text patterns), and
    without enhanced status codes where the target did not advertise ENHANCEDSTATUSCODES:
    RFC 2034 §3 requires them only of a server that does (the contract's own example is
    ``250 OK ids=...``). A MUST expectation of them cannot be judged there: not verified."""
    if (match.enhanced or match.enhanced_every_line) and not ctx.enhanced_codes:
        if must:
            raise NotVerified(
                "the target does not advertise ENHANCEDSTATUSCODES, so it owes no enhanced "
                "status codes (RFC 2034 §3)"
            )
        match = replace(match, enhanced=None, enhanced_every_line=False)
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
