"""What a run may cost a target: failed logins, messages, and the auth-failure block.

The target blocks an address after ``threshold`` failed logins within ``cooldown`` seconds. The
state lives in a file per target under the system's temporary folder, locked with ``flock``, so
every pytest-xdist worker (and the next run, which the target still remembers) sees the same
count: no non-destructive scenario ever trips the block, whatever the order or ``-n``. The
messages of a run are counted in a file of their own (one octet appended per message).

Destructive scenarios hold the run's lock exclusively; all others hold it shared, so a
destructive scenario never runs beside another.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from .errors import BudgetError

_MARGIN = 0.25  # seconds added to every cooldown we wait out, for clock skew


def state_dir() -> Path:
    path = Path(os.environ.get("ANYPOST_CONFORMANCE_STATE", tempfile.gettempdir()))
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    return path


def read_all(fd: int) -> bytes:
    """The whole of an open file, read without moving its offset."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class TargetBudget:
    def __init__(
        self,
        target_key: str,
        threshold: int | None,
        cooldown: float | None,
        messages: int,
        run_id: str | None = None,
    ) -> None:
        digest = hashlib.sha256(target_key.encode()).hexdigest()[:16]
        folder = state_dir()
        self.path = folder / f"anypost-conformance-{digest}.json"
        self.lock_path = folder / f"anypost-conformance-{digest}.lock"
        self.threshold = threshold
        self.cooldown = cooldown or 0.0
        self.messages = messages
        self.run_id = run_id or os.environ.get("ANYPOST_CONFORMANCE_RUN", "local")
        run = hashlib.sha256(self.run_id.encode()).hexdigest()[:16]
        self.messages_path = folder / f"anypost-conformance-{digest}-messages-{run}.count"
        self.who = ""  # the scenario and port waiting, for the console's notice

    # Waits are announced in the state file so the console (in the controller, whatever
    # worker waits) can say why the run is quiet and for how long.
    def _announce(self, until: float, why: str) -> None:
        with self._state() as state:
            waits = state.setdefault("waits", {})
            waits[f"{os.getpid()}"] = {"until": until, "why": why, "who": self.who}

    def _announced(self) -> None:
        with self._state() as state:
            state.setdefault("waits", {}).pop(f"{os.getpid()}", None)

    def waits(self) -> list[dict[str, Any]]:
        """The waits under way now, each with ``until`` (epoch seconds), ``why`` and ``who``."""
        now = time.time()
        with self._state(write=False) as state:
            found = state.get("waits", {}).values()
            return [w for w in found if isinstance(w, dict) and w.get("until", 0) > now]

    async def _sleep(self, delay: float, why: str) -> None:
        if delay < 1.0:  # not worth a line on the console
            await asyncio.sleep(delay)
            return
        self._announce(time.time() + delay, why)
        try:
            await asyncio.sleep(delay)
        finally:
            self._announced()

    @contextlib.contextmanager
    def _state(self, write: bool = True) -> Iterator[dict[str, Any]]:
        # Rewritten in place (pwrite, then ftruncate to the new length): truncating a file to
        # zero makes ext4 flush it to disk on close (auto_da_alloc), a quarter of a
        # millisecond on every scenario that sends a message.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                text = read_all(fd)
                try:
                    state = json.loads(text) if text else {}
                except ValueError:
                    state = {}
                if not isinstance(state, dict):
                    state = {}
                state.setdefault("failures", [])
                state.setdefault("blocked_until", 0.0)
                before = json.dumps(state) if write else ""
                yield state
                if write:
                    after = json.dumps(state)
                    if after != before:
                        data = after.encode("utf-8")
                        os.pwrite(fd, data, 0)
                        os.ftruncate(fd, len(data))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _prune(self, state: dict[str, Any], now: float) -> None:
        state["failures"] = [t for t in state["failures"] if now - t < self.cooldown]

    async def wait_unblocked(self) -> float:
        """Wait while our own block scenario has the target blocking us; seconds waited."""
        waited = 0.0
        while True:
            with self._state(write=False) as state:
                delay = state["blocked_until"] - time.time()
            if delay <= 0:
                return waited
            await self._sleep(delay + _MARGIN, "the target's auth-failure block to lift")
            waited += delay + _MARGIN

    async def wait_for_room(self, logins: int) -> float:
        """Before a session opens: wait until ``logins`` failed logins fit in the budget, so the
        session never sits idle through a cooldown (a target closes an idle session, RFC 5321
        §4.5.3.2, often sooner than its cooldown ends). Reserves nothing: each login still
        reserves its place, which only another process could have taken meanwhile. Returns
        the seconds waited."""
        waited = await self.wait_unblocked()
        if not self.threshold or logins <= 0:
            return waited
        room = max(self.threshold - 1 - min(logins, self.threshold - 1), 0)
        while True:
            now = time.time()
            with self._state(write=False) as state:
                self._prune(state, now)
                held = sorted(state["failures"])
            if len(held) <= room:
                return waited
            # The oldest failures are forgotten first: wait for all but ``room`` of them.
            delay = max(held[len(held) - room - 1] + self.cooldown - now + _MARGIN, 0.05)
            await self._sleep(
                delay,
                f"the auth-failure budget: {len(held)} failed login(s) within the "
                f"{self.cooldown:g}s cooldown, the target blocks at {self.threshold}",
            )
            waited += delay

    async def before_failing_login(self) -> float:
        """Reserve one failed login, first waiting out the cooldown if it would trip the block.

        Returns the reservation, to ``release`` when the login turned out not to count.
        """
        await self.wait_unblocked()
        if not self.threshold:
            return 0.0
        if self.threshold <= 1:
            raise BudgetError(
                "the target blocks on the first failed login: no probe can fail safely"
            )
        while True:
            now = time.time()
            with self._state() as state:
                self._prune(state, now)
                if len(state["failures"]) + 1 < self.threshold:
                    state["failures"].append(now)
                    return now
                delay = state["failures"][0] + self.cooldown - now + _MARGIN
                held = len(state["failures"])
            await self._sleep(
                max(delay, 0.05),
                f"the auth-failure budget: {held} failed login(s) within the "
                f"{self.cooldown:g}s cooldown, the target blocks at {self.threshold}",
            )

    def release(self, reservation: float) -> None:
        """The reserved login was refused before credentials were judged: it does not count."""
        with self._state() as state:
            if reservation in state["failures"]:
                state["failures"].remove(reservation)

    def confirm(self, reservation: float) -> None:
        """The reserved login failed: count it from now, when its reply came, since the target
        counted it at some moment between the reservation and the reply."""
        now = time.time()
        with self._state() as state:
            if reservation in state["failures"]:
                state["failures"].remove(reservation)
            state["failures"].append(now)
            state["failures"].sort()

    def record_failure(self) -> None:
        """A login failed that we did not expect to fail: count it all the same."""
        now = time.time()
        with self._state() as state:
            self._prune(state, now)
            state["failures"].append(now)

    def record_block(self) -> None:
        """A destructive scenario has (or may have) tripped the block: everyone waits it out."""
        with self._state() as state:
            state["failures"] = []
            state["blocked_until"] = time.time() + self.cooldown

    def spend_message(self) -> None:
        """Count one message of this run against the profile's budget, or refuse it.

        One octet is appended per message to a file of this target and run: each append is
        atomic across workers (O_APPEND), and the offset it leaves is the message's number, so
        the count needs no lock and no parsing (a message is sent on most scenarios)."""
        fd = os.open(self.messages_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, b".")
            spent = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        if spent > self.messages:
            raise BudgetError(
                f"the profile's message budget ({self.messages}) for this run is spent"
            )

    @contextlib.asynccontextmanager
    async def exclusive(self, destructive: bool) -> AsyncIterator[None]:
        """Hold the run lock: exclusively for a destructive scenario, shared otherwise."""
        fh = open(self.lock_path, "a+")  # noqa: SIM115  # held across awaits, closed below
        try:
            mode = fcntl.LOCK_EX if destructive else fcntl.LOCK_SH
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                # Someone holds it the other way: wait in a thread, not in the event loop.
                await asyncio.to_thread(fcntl.flock, fh, mode)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
