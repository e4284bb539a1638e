"""The step kinds, in a registry: each turns one scenario step into SMTP traffic and returns
what it observed. Judging is not done here (see ``expect``)."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import random
import re
import secrets
import ssl
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .budget import TargetBudget
from .driver import Driver, tls_context
from .errors import ScenarioError, TransportError
from .expect import Observation, ids_of
from .idregistry import IdRegistry
from .messages import build, size_value, unescape
from .model import Profile, Step
from .observer import delivered_copy
from .reply import Reply
from .transcript import Transcript
from .variables import MissingValue, resolve

USERNAME = "anypost"
GOOD_ROLES = ("send_only", "full_access", "restricted")


class NotVerified(Exception):
    """The scenario cannot be judged here (a missing role, no observer, budget spent)."""


class PreconditionFailed(Exception):
    """A step the scenario does not test could not be done (inside ``login``: EHLO or
    STARTTLS refused, TLS never started; or a key that must not be sent on this session).

    ``requirement`` is the requirement the failure is charged to; ``temporary`` says the target
    answered 4xx or closed the session (inconclusive) rather than refused outright.
    """

    def __init__(self, requirement: str, reason: str, temporary: bool = False) -> None:
        super().__init__(requirement, reason, temporary)
        self.requirement = requirement
        self.reason = reason
        self.temporary = temporary

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class GenerationSettings:
    """Bounds of the property-based steps: the profile's ``generated:`` block, then the CLI."""

    examples: int = 60
    seconds: float = 30.0
    seed: int | None = None

    @classmethod
    def from_environment(cls, profile: Profile) -> GenerationSettings:
        # The plugin puts the command line's choices in the environment, which every
        # pytest-xdist worker inherits.
        env = os.environ
        examples = env.get("ANYPOST_CONFORMANCE_EXAMPLES") or profile.generated.get("examples")
        seconds = env.get("ANYPOST_CONFORMANCE_SECONDS") or profile.generated.get("seconds")
        chosen = env.get("ANYPOST_CONFORMANCE_SEED") or profile.generated.get("seed")
        return cls(
            int(examples) if examples is not None else cls.examples,
            float(seconds) if seconds is not None else cls.seconds,
            int(chosen) if chosen is not None else None,
        )


@dataclass
class Context:
    profile: Profile
    port_name: str
    driver: Driver
    transcript: Transcript
    budget: TargetBudget
    ids: IdRegistry
    destructive: bool = False
    recipients: list[str] = field(default_factory=list)  # accepted in this transaction
    seen_ids: set[str] = field(default_factory=set)
    last_message_id: str | None = None
    # Whether the last plaintext EHLO advertised STARTTLS (None: none answered yet).
    starttls_offered: bool | None = None
    run_step: Callable[[Step], Awaitable[None]] | None = None
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings())
    # Judge a step whose traffic already happened (a pipelined group's): the observation, or
    # the transport failure that stood in for its reply.
    judge_step: Callable[[Step, Observation | TransportError], Awaitable[None]] | None = None
    # Whether the last EHLO of this connection advertised ENHANCEDSTATUSCODES (RFC 2034).
    enhanced_codes: bool = False

    def learn(self, ehlo: Any) -> None:
        if isinstance(ehlo, Reply) and ehlo.code == 250:
            self.enhanced_codes = "ENHANCEDSTATUSCODES" in ehlo.extensions()

    def resolve(self, value: Any) -> Any:
        try:
            return resolve(value, self.profile)
        except MissingValue as exc:
            raise NotVerified(f"the profile has no {exc.name}") from None

    def size_limit(self) -> int | None:
        value = self.profile.limits.get("message_size")
        return None if value is None else int(value)


Executor = Callable[[Context, Step], Awaitable[Observation]]
REGISTRY: dict[str, Executor] = {}


def step(*kinds: str) -> Callable[[Executor], Executor]:
    def register(fn: Executor) -> Executor:
        for kind in kinds:
            REGISTRY[kind] = fn
        return fn

    return register


def _observe(ctx: Context, reply: Any, **extra: Any) -> Observation:
    return Observation(
        reply=reply,
        closed=not ctx.driver.connected,
        tls=ctx.driver.tls,
        accepted_recipients=len(ctx.recipients),
        seen_ids=frozenset(ctx.seen_ids),
        **extra,
    )


def secure_session(ctx: Context) -> bool:
    """Whether a profile key may go on this session: TLS is established on it and the
    certificate was verified against the profile's trust, or the profile says ``insecure``."""
    if not ctx.driver.tls:
        return False
    if ctx.profile.tls.insecure:
        return True
    ca = str(ctx.profile.tls.ca_file) if ctx.profile.tls.ca_file else None
    context = tls_context(ca, ctx.profile.tls.system, False)
    return context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@functools.lru_cache(maxsize=32)
def decoy_secret(secret: str, run: str) -> str:
    """A secret in the shape of ``secret`` (its prefix up to the last underscore, its length,
    its alphabet), random for each run: what a probe of AUTH before TLS sends instead of a key.
    A server that judges it (535) on a plaintext session has judged a credential in clear."""
    prefix, sep, body = secret.rpartition("_")
    head = prefix + sep
    alphabet = string.ascii_letters + string.digits
    if body and all(c in string.hexdigits.lower() for c in body):
        alphabet = "0123456789abcdef"
    rng = random.Random(f"{run}:{len(secret)}:{head}")
    return head + "".join(rng.choice(alphabet) for _ in range(len(body) or 16))


def _run_id() -> str:
    return os.environ.get("ANYPOST_CONFORMANCE_RUN") or _LOCAL_RUN


_LOCAL_RUN = secrets.token_hex(16)


def key_secret(profile: Profile, role: str) -> str:
    key = profile.keys.get(role)
    if key is None:
        raise NotVerified(f"the profile has no key of role {role}")
    if key.value is not None:
        return key.value
    assert key.env is not None
    secret = os.environ.get(key.env)
    if not secret:
        raise NotVerified(f"environment variable {key.env} (key role {role}) is not set")
    return secret


@step("connect", "reconnect")
async def _connect(ctx: Context, s: Step) -> Observation:
    args = s.args or {}
    name = args.get("port", ctx.port_name)
    if name not in ctx.profile.ports:
        raise NotVerified(f"the profile has no port named {name}")
    ctx.driver.port = ctx.profile.ports[name]
    ctx.recipients.clear()
    ctx.enhanced_codes = False
    await ctx.budget.wait_unblocked()
    return _observe(ctx, await ctx.driver.connect())


@step("ehlo", "helo")
async def _hello(ctx: Context, s: Step) -> Observation:
    ctx.recipients.clear()
    reply = await ctx.driver.command(f"{s.kind.upper()} {ctx.resolve(s.args)}")
    ctx.learn(reply)
    _note_hello(ctx, s.kind, reply)
    return _observe(ctx, reply)


def _note_hello(ctx: Context, kind: str, reply: Reply) -> None:
    # Only the plaintext EHLO counts: after TLS a server must not offer STARTTLS again.
    if kind == "ehlo" and reply.code == 250 and not ctx.driver.tls:
        ctx.starttls_offered = "STARTTLS" in reply.extensions()


def no_tls_offered(ctx: Context, reply: Reply | None) -> bool:
    """A refused STARTTLS on a session whose EHLO never advertised it.

    RFC 3207 §4 gives 454 for "TLS not available due to temporary reason", but a server that
    does not advertise STARTTLS (§4: a server MUST NOT offer it unless it can) offers no TLS at
    all: its 4xx is a standing refusal, not a transient one, and fails TLS-1.
    """
    return (
        reply is not None
        and reply.reply_class != 2
        and not ctx.driver.tls
        and ctx.starttls_offered is False
    )


@step("starttls")
async def _starttls(ctx: Context, s: Step) -> Observation:
    inject = unescape((s.args or {}).get("inject", ""))
    return _observe(ctx, await ctx.driver.starttls(inject))


def expects_failed_login(s: Step) -> bool:
    """Whether an auth or login step may fail a login (and so spends the auth-failure budget)."""
    return _expects_failure(s, dict(s.args))


def _expects_failure(s: Step, args: dict[str, Any]) -> bool:
    role = args.get("key")
    plain = (
        role in GOOD_ROLES
        and str(args.get("mechanism", "PLAIN")).upper() in ("PLAIN", "LOGIN")
        and not any(
            k in args
            for k in ("secret", "payload", "authzid", "username", "cancel", "oversize_answer")
        )
    )
    must = s.expect.must
    refusal = bool(must.refused) or bool(set(must.reply_class or ()) & {4, 5})
    return not plain or (s.expect.explicit and refusal)


@step("auth")
async def _auth(ctx: Context, s: Step) -> Observation:
    args: dict[str, Any] = dict(s.args)
    mechanism = str(args.get("mechanism", "PLAIN"))  # sent as written: case is the client's
    spoken = mechanism.upper()
    username = args.get("username", USERNAME)
    role = args.get("key")
    secret = key_secret(ctx.profile, role) if role else str(args.get("secret", ""))
    if role:
        ctx.transcript.redact.add(secret)
    label = f"<redacted: {username} / {role + ' key' if role else 'literal secret'}>"
    failing = _expects_failure(s, args)
    secure = secure_session(ctx)
    if role and not secure:
        # A judge never harms its target: no key of the profile goes on a session without
        # verified TLS. A probe that expects AUTH to be refused there sends a decoy in the
        # key's shape instead; a step that needs the key to work cannot run.
        if not failing:
            raise PreconditionFailed(
                "TLS-1",
                f"TLS is not established on this session; the {role} key was not sent",
            )
        secret = decoy_secret(secret, _run_id())
        label = f"<decoy in the shape of the {role} key: {username} / not a real key>"
        ctx.transcript.event(f"no TLS on this session: a decoy is sent instead of the {role} key")
    # A destructive scenario is meant to trip the block: it holds the target alone, and the
    # budget records the block when it ends.
    reservation = (
        await ctx.budget.before_failing_login() if failing and not ctx.destructive else None
    )
    driver = ctx.driver
    if "payload" in args:
        reply = await driver.command(f"AUTH {mechanism} {args['payload']}")
    elif "oversize_answer" in args:
        # A client (or an attacker) answering a challenge with a line longer than any
        # credential: the server must refuse it with a reply, not a crash or a hang.
        reply = await driver.command(f"AUTH {mechanism}")
        if reply.code == 334:
            size = int(args["oversize_answer"])
            filler = ("QUFB" * (size // 4 + 1))[:size]
            reply = await driver.command(filler, shown=f"<{size} octets of base64>")
    elif args.get("cancel"):
        reply = await driver.command(f"AUTH {mechanism}")
        if reply.code == 334:
            reply = await driver.command("*")
    elif spoken == "PLAIN":
        authzid = args.get("authzid", "")
        blob = base64.b64encode(f"{authzid}\0{username}\0{secret}".encode()).decode()
        if args.get("initial_response", True):
            reply = await driver.command(
                f"AUTH {mechanism} {blob}", shown=f"AUTH {mechanism} {label}"
            )
        else:
            reply = await driver.command(f"AUTH {mechanism}")
            if reply.code == 334:
                reply = await driver.command(blob, shown=label)
    elif spoken == "LOGIN":
        reply = await driver.command(f"AUTH {mechanism}")
        if reply.code == 334:
            reply = await driver.command(base64.b64encode(username.encode()).decode())
        if reply.code == 334:
            reply = await driver.command(base64.b64encode(secret.encode()).decode(), shown=label)
    else:
        # A mechanism the harness does not speak (the probe is that it is refused): no secret
        # goes out; a challenge is cancelled (RFC 4954 §4), but the observation stays the
        # reply to AUTH itself: a 334 means the server took the name.
        reply = await driver.command(f"AUTH {mechanism}")
        if reply.code == 334:
            await driver.command("*")
    # Only a judged credential counts against us (535, or a 421 block).
    counted = reply.code in (535, 421)
    if counted and reservation is None and not ctx.destructive:
        ctx.budget.record_failure()
    elif not counted and reservation:
        ctx.budget.release(reservation)
    elif counted and reservation:
        # The server judged it between our reservation and its reply: from now on it is
        # remembered until now + cooldown at the latest (a loaded or distant server counts it
        # well after we reserved).
        ctx.budget.confirm(reservation)
    # RFC 4954 §4 and RFC 3207 §4: before TLS the server refuses AUTH itself (530, 538, 503,
    # 502, 504...); 535 says it judged the credential, which it must not do in clear.
    judged = None
    if reply.code == 535 and not ctx.driver.tls:
        judged = (
            "the server judged a credential on a plaintext session (535 before TLS): it must "
            "refuse AUTH without TLS (530 5.7.0 or 538 5.7.11), not evaluate the secret"
        )
    return _observe(ctx, reply, plaintext_judgement=judged)


@step("login")
async def _login(ctx: Context, s: Step) -> Observation:
    """EHLO, STARTTLS, EHLO, AUTH: the observation is the first refusal, or AUTH's reply."""
    hello = f"EHLO {ctx.profile.helo_name}"
    for action in ("ehlo", "starttls", "ehlo"):
        try:
            if action == "ehlo":
                reply = await ctx.driver.command(hello)
                ctx.learn(reply)
                _note_hello(ctx, "ehlo", reply)
            elif not ctx.driver.tls:
                reply = await ctx.driver.starttls()
            else:
                continue
        except TransportError as exc:
            if ctx.destructive:
                raise  # a block scenario judges the closed session itself
            # A close is the target's business (inconclusive); a timeout or garbage is not.
            raise PreconditionFailed(
                _LOGIN_STAGE[action],
                f"login: {exc.message}",
                temporary=exc.dropped,
            ) from None
        requirement = _LOGIN_STAGE[action]
        if action == "starttls" and no_tls_offered(ctx, reply):
            # Not the target's load or a block: it has no TLS to offer (a block scenario
            # included, which could otherwise take this refusal for the block).
            raise PreconditionFailed(
                requirement,
                f"login: the target offers no STARTTLS (its EHLO did not advertise it) and "
                f"answered STARTTLS with {reply}; AUTH was not tried",
            )
        if reply.code == 421 and ctx.destructive:
            # The auth-failure block refuses the session early (421 at EHLO): that refusal is
            # what a block scenario judges. Any other refusal before AUTH is no block.
            return _observe(ctx, reply)
        if reply.reply_class != 2:
            raise PreconditionFailed(
                requirement,
                f"login: {action.upper()} answered {reply}; AUTH was not tried",
                temporary=reply.reply_class == 4 or not ctx.driver.connected,
            )
        if action == "starttls" and not ctx.driver.tls:
            raise PreconditionFailed(
                requirement,
                f"login: STARTTLS answered {reply} but TLS never started; the key was not sent",
            )
    return await _auth(ctx, s)


# What each stage of a login is charged to when it fails.
_LOGIN_STAGE = {"ehlo": "SESSION-1", "starttls": "TLS-1"}


@step("wait")
async def _wait(ctx: Context, s: Step) -> Observation:
    seconds = s.args["for"]
    if seconds == "cooldown":
        cooldown = ctx.profile.limits.get("auth_failure_cooldown")
        if cooldown is None:
            raise NotVerified("the profile has no limits.auth_failure_cooldown")
        seconds = float(cooldown) + 0.5
    ctx.transcript.event(f"waiting {seconds:g}s")
    await asyncio.sleep(float(seconds))
    return _observe(ctx, None)


@step("mail")
async def _mail(ctx: Context, s: Step) -> Observation:
    line = _mail_line(ctx, s)
    ctx.recipients.clear()
    return _observe(ctx, await ctx.driver.command(line))


def _mail_line(ctx: Context, s: Step) -> str:
    args = ctx.resolve(s.args)
    if isinstance(args, str):
        args = {"from": args}
    address = args["from"].strip()
    path = (
        "<>" if address in ("", "<>") else (address if address.startswith("<") else f"<{address}>")
    )
    params = list(args.get("params", []))
    if "size" in args:
        try:
            params.append(f"SIZE={size_value(args['size'], ctx.size_limit())}")
        except LookupError:
            raise NotVerified("the profile has no limits.message_size") from None
    return " ".join([f"MAIL FROM:{path}", *params])


def _normalized(address: str) -> str:
    local, _, domain = address.strip("<>").rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"


@step("rcpt")
async def _rcpt(ctx: Context, s: Step) -> Observation:
    addresses = _rcpt_addresses(ctx, s)
    reply = None
    for address in addresses:
        reply = await ctx.driver.command(_rcpt_line(address))
        _accepted(ctx, address, reply)
        if reply.reply_class != 2 and len(addresses) > 1:
            break
    return _observe(ctx, reply)


def _rcpt_line(address: str) -> str:
    return f"RCPT TO:{address if address.startswith('<') else f'<{address}>'}"


def _accepted(ctx: Context, address: str, reply: Reply) -> None:
    if reply.reply_class == 2 and _normalized(address) not in ctx.recipients:
        ctx.recipients.append(_normalized(address))


def _rcpt_addresses(ctx: Context, s: Step) -> list[str]:
    args = ctx.resolve(s.args)
    if isinstance(args, str):
        args = {"to": args}
    count = int(args.get("count", 1))
    if "to" in args:
        addresses = [args["to"]] * count
    else:
        if ctx.profile.recipient(count - 1) is None:
            raise NotVerified(
                f"the scenario needs {count} recipients; the profile lists "
                f"{len(ctx.profile.recipients)} and has no recipient_pattern"
            )
        addresses = [str(ctx.profile.recipient(n)) for n in range(count)]
    return addresses


@step("data")
async def _data(ctx: Context, s: Step) -> Observation:
    message, verbatim = _message(ctx, s)
    pace = (ctx.resolve(s.args or {})).get("pace")
    if pace is not None:
        start, final = await _paced_data(ctx, message, int(pace["chunks"]), pace["interval"])
    else:
        start, final = await ctx.driver.data(message, verbatim)
    observation = _claimed(ctx, _observe(ctx, final if final is not None else start))
    ctx.recipients.clear()
    return observation


def _claimed(ctx: Context, observation: Observation) -> Observation:
    """The observation of an end of data, with the ids the run saw before marked as seen:
    ids are unique across the whole run, whichever worker saw them first."""
    reply = observation.reply
    if reply is None or reply.code != 250:
        return observation
    repeated = ctx.ids.claim(ids_of(reply) or [])
    if not repeated:
        return observation
    return replace(observation, seen_ids=observation.seen_ids | repeated)


def _refuse_strangers(ctx: Context, s: Step, recipients: list[str]) -> None:
    strangers = [r for r in recipients if not ctx.profile.may_receive(_normalized(r))]
    if strangers:
        raise ScenarioError(
            f"{s.location}: refusing to send DATA to {', '.join(strangers)}: "
            "the harness only ever mails the profile's recipients"
        )


def _message(ctx: Context, s: Step) -> tuple[bytes, bool]:
    """The message of a data step, once its recipients are known to be the profile's."""
    _refuse_strangers(ctx, s, ctx.recipients)
    try:
        message, verbatim = build(ctx.resolve(s.args or {}), ctx.size_limit())
    except LookupError:
        raise NotVerified("the profile has no limits.message_size") from None
    ctx.last_message_id = _message_id(message)
    if ctx.recipients:
        ctx.budget.spend_message()
    return message, verbatim


@step("pipeline")
async def _pipeline(ctx: Context, s: Step) -> Observation:
    """RFC 2920: the group's commands in one write, each reply judged against its own step.

    A data step (last) sends its message after a 354, before the group is judged, so the
    session is never left inside DATA."""
    if ctx.driver.extensions is None or "PIPELINING" not in ctx.driver.extensions:
        raise NotVerified("the last EHLO did not advertise PIPELINING (RFC 2920)")
    lines: list[str] = []
    owners: list[int] = []  # the index of the step each line belongs to
    rcpts: dict[int, list[str]] = {}
    for index, sub in enumerate(s.steps):
        if sub.kind == "mail":
            lines.append(_mail_line(ctx, sub))
        elif sub.kind == "rcpt":
            rcpts[index] = _rcpt_addresses(ctx, sub)
            lines += [_rcpt_line(a) for a in rcpts[index]]
            owners += [index] * (len(rcpts[index]) - 1)
        else:
            lines.append(sub.kind.upper())
        owners.append(index)
    if s.steps[-1].kind == "data":
        # Checked before anything is sent: DATA goes to the profile's recipients only.
        _refuse_strangers(ctx, s.steps[-1], [a for group in rcpts.values() for a in group])
    replies, failure = await ctx.driver.pipeline(lines)
    final: Reply | None = None
    last = s.steps[-1]
    if last.kind == "data" and len(replies) == len(lines) and replies[-1].code == 354:
        ctx.recipients.clear()
        for index, addresses in rcpts.items():
            answers = [r for r, o in zip(replies, owners, strict=False) if o == index]
            for address, reply in zip(addresses, answers, strict=False):
                _accepted(ctx, address, reply)
        message, verbatim = _message(ctx, last)
        try:
            final = await ctx.driver.message(message, verbatim)
        except TransportError as exc:
            failure = exc
    assert ctx.judge_step is not None
    ctx.recipients.clear()
    for index, sub in enumerate(s.steps):
        mine = [
            (lines[i], r)
            for i, (r, o) in enumerate(zip(replies, owners, strict=False))
            if o == index
        ]
        named = sub if sub.name else replace(sub, name=f"{lines[owners.index(index)]} (pipelined)")
        if not mine:
            await ctx.judge_step(named, failure or TransportError("no reply", closed=True))
            break
        if sub.kind in ("mail", "rset"):
            ctx.recipients.clear()
        judged = mine[-1][1]
        for line, reply in mine:
            if sub.kind == "rcpt":
                _accepted(ctx, line[len("RCPT TO:") :], reply)
            if reply.reply_class != 2:
                judged = reply
                break
        if sub.kind == "data" and judged.code == 354:
            if final is None:
                await ctx.judge_step(named, failure or TransportError("no reply", closed=True))
                break
            judged = final
        observation = _observe(ctx, judged)
        if sub.kind == "data":
            observation = _claimed(ctx, observation)
            ctx.recipients.clear()
        await ctx.judge_step(named, observation)
    return _observe(ctx, None)


async def _paced_data(
    ctx: Context, message: bytes, chunks: int, interval: float | str
) -> tuple[Reply, Reply | None]:
    """DATA sent slowly but steadily: ``chunks`` pieces, ``interval`` seconds apart.

    RFC 5321 §4.5.3.2.6 gives the server's DATA timeout per block received, not for the whole
    upload: a client that keeps sending is not idle, however long the message takes.
    """
    if isinstance(interval, str):
        idle = ctx.profile.limits.get("idle_timeout")
        if idle is None:
            raise NotVerified("the profile has no limits.idle_timeout")
        interval = float(idle) / int(interval.partition("/")[2])
    start = await ctx.driver.command("DATA")
    if start.code != 354:
        return start, None
    payload = re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"
    # Cut at line ends, so that each piece is whole lines the server can take in.
    lines = payload.splitlines(keepends=True)
    per = max(1, -(-len(lines) // chunks))
    pieces = [b"".join(lines[i : i + per]) for i in range(0, len(lines), per)]
    for n, piece in enumerate(pieces):
        if n:
            await asyncio.sleep(float(interval))
        await ctx.driver.write(
            piece, shown=f"<message piece {n + 1}/{len(pieces)}, {len(piece)} octets>"
        )
    return start, await ctx.driver.read_reply()


def _message_id(message: bytes) -> str | None:
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return None


@step("rset", "noop", "quit")
async def _simple(ctx: Context, s: Step) -> Observation:
    if s.kind == "rset":
        ctx.recipients.clear()
    reply = await ctx.driver.command(s.kind.upper())
    if s.kind == "quit":
        await ctx.driver.wait_closed(ctx.profile.timeout)
    return _observe(ctx, reply)


@step("raw")
async def _raw(ctx: Context, s: Step) -> Observation:
    args = ctx.resolve(s.args)
    wanted = int(args.get("replies", 1))
    silent = wanted == 0 or s.expect.must.no_reply
    # The bytes owe ``wanted`` replies (the scenario's count); one more is an extra reply.
    await ctx.driver.write(unescape(args["send"]), replies=0 if silent else wanted)
    if silent:
        silent_for = min(ctx.profile.timeout, 2.0)
        return _observe(ctx, await ctx.driver.silence(silent_for))
    reply = None
    for _ in range(wanted):
        reply = await ctx.driver.read_reply()
    return _observe(ctx, reply)


@step("repeat")
async def _repeat(ctx: Context, s: Step) -> Observation:
    times = s.args["times"]
    if isinstance(times, str):
        threshold = ctx.profile.limits.get("auth_failure_threshold")
        if threshold is None:
            raise NotVerified("the profile has no limits.auth_failure_threshold")
        delta = times[len("threshold") :]
        times = int(threshold) + (int(delta) if delta else 0)
    assert ctx.run_step is not None
    for _ in range(times):
        for sub in s.steps:
            await ctx.run_step(sub)
    return _observe(ctx, None)


@step("observe")
async def _observe_copy(ctx: Context, s: Step) -> Observation:
    observer = ctx.profile.observer
    if observer is None:
        raise NotVerified("the profile has no observer to read delivered copies")
    if ctx.last_message_id is None:
        raise ScenarioError(f"{s.location}: observe needs an earlier data step")
    copy = await delivered_copy(Path(observer["path"]), ctx.last_message_id, ctx.profile.timeout)
    if copy is None:
        raise TransportError(
            f"no delivered copy with Message-ID {ctx.last_message_id} within {ctx.profile.timeout:g}s",
            closed=False,
        )
    problems = []
    args = s.args or {}
    for name in args.get("lacks_headers", []):
        if copy.get_all(name):
            problems.append(
                f"expected the delivered copy to lack {name}; it has {copy.get_all(name)}"
            )
    for name in args.get("has_headers", []):
        if not copy.get_all(name):
            problems.append(f"expected the delivered copy to have {name}")
    needle = args.get("body_contains")
    if needle is not None:
        body = copy.get_body(("plain", "html"))
        text = body.get_content() if body is not None else ""
        if needle not in text:
            problems.append(f"expected the delivered body to contain {needle!r}")
    ctx.transcript.event(f"observed the delivered copy of {ctx.last_message_id}")
    return _observe(ctx, None, error="; ".join(problems) or None)


@step("generate")
async def _generate(ctx: Context, s: Step) -> Observation:
    """A differential property: hypothesis writes the headers (``generated``), each example is
    one transaction on this session, and the oracle's verdict is held against the reply."""
    from . import generated  # hypothesis and the RFC 5322 grammar load only when needed

    args = ctx.resolve(s.args)
    family = args["family"]
    key = args.get("key", "send_only")
    permitted = [
        ctx.profile.domains[r] for r in ("verified", "outside_allowed") if r in ctx.profile.domains
    ]
    if not permitted or "unverified" not in ctx.profile.domains:
        raise NotVerified("the profile needs domains.verified and domains.unverified")
    if key != "send_only" and "outside_allowed" in ctx.profile.domains:
        permitted = permitted[:1]  # a restricted key may use only its own allowed domain
    others = [
        ctx.profile.domains[r] for r in ("unverified", "other_team") if r in ctx.profile.domains
    ]
    allowed = frozenset(d.lower().rstrip(".") for d in permitted)
    strategy: Any
    judge: Callable[[generated.Probe], generated.Verdict]
    if family == "control":
        strategy, judge = generated.control_probes(), generated.judge_control
    else:
        strategy = generated.author_probes(family, permitted, others)
        judge = functools.partial(generated.judge_author, permitted=allowed)
    config = ctx.generation
    limits = generated.Settings(
        examples=int(args.get("examples", config.examples)),
        seconds=float(args.get("seconds", config.seconds)),
        seed=config.seed,
    )
    recipient = ctx.profile.recipients[0]
    loop = asyncio.get_running_loop()

    async def one(probe: generated.Probe) -> int | None:
        if not ctx.driver.connected:
            await _connect(ctx, Step("connect", None, s.expect, s.location))
            login = await _login(ctx, Step("login", {"key": key}, s.expect, s.location))
            if login.reply is None or login.reply.code != 235:
                raise TransportError(f"could not log in again: {login.reply}", closed=False)
        mail = await ctx.driver.command(f"MAIL FROM:<probe@{permitted[0]}>")
        if mail.reply_class != 2:
            raise TransportError(f"MAIL FROM was refused: {mail}", closed=False)
        rcpt = await ctx.driver.command(f"RCPT TO:<{recipient}>")
        if rcpt.reply_class != 2:
            raise TransportError(f"RCPT TO was refused: {rcpt}", closed=False)
        ctx.recipients[:] = [_normalized(recipient)]
        headers = [{"name": n, "value": v} for n, v in probe.headers]
        spec = {"from_header": False, "to": recipient, "headers": headers, "text": "Generated."}
        if family == "control":
            spec = {"from": f"probe@{permitted[0]}", "to": recipient, "headers": headers}
        message, _ = build(spec, ctx.size_limit())
        ctx.budget.spend_message()
        ctx.transcript.event(f"example: {probe.describe()}")
        start, final = await ctx.driver.data(message)
        ctx.recipients.clear()
        reply = final if final is not None else start
        if reply.code == 250:
            ctx.ids.claim(ids_of(reply) or [])
        # A 4xx says nothing of the header (RFC 5321 §4.2.1): no verdict for this example.
        return None if reply.reply_class == 4 else reply.code

    def submit(probe: generated.Probe) -> int | None:
        return asyncio.run_coroutine_threadsafe(one(probe), loop).result()

    result = await asyncio.to_thread(
        generated.run_property,
        strategy,
        judge,
        submit,
        limits,
        random.SystemRandom().getrandbits(32),
    )
    ctx.transcript.event(
        f"hypothesis seed {result.seed}: {result.examples} examples sent "
        f"(rerun with --seed {result.seed})"
    )
    failure = None
    if result.failure is not None:
        failure = f"{result.failure}\n  seed: {result.seed} (rerun with --seed {result.seed})"
    return _observe(ctx, None, error=failure)
