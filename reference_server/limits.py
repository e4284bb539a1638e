"""The auth-failure block: repeated failed logins from one client address lock it out.

A failure is remembered for ``cooldown`` seconds. When ``threshold`` failures are remembered at
once, the address is blocked for ``cooldown`` seconds; while blocked it is refused even with a
valid key (the contract: "Repeated failures from one address are temporarily blocked").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class AuthFailureLimiter:
    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 1:
            raise ValueError(f"auth failure threshold={threshold} must be at least 1")
        if cooldown <= 0:
            raise ValueError(f"auth failure cooldown={cooldown} must be positive")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def is_blocked(self, address: str) -> bool:
        until = self._blocked_until.get(address)
        if until is None:
            return False
        if self._clock() >= until:
            del self._blocked_until[address]
            return False
        return True

    def record_failure(self, address: str) -> bool:
        """Record a failed login; return True when this failure trips the block."""
        now = self._clock()
        if len(self._failures) > 10_000:
            self.forget_expired()  # many clients: keep memory bounded
        window = self._failures.setdefault(address, deque())
        while window and now - window[0] >= self.cooldown:
            window.popleft()
        window.append(now)
        if len(window) >= self.threshold:
            window.clear()
            self._blocked_until[address] = now + self.cooldown
            return True
        return False

    def forget_expired(self) -> None:
        """Drop state that can no longer matter, so memory stays bounded under many clients."""
        now = self._clock()
        for address in [a for a, u in self._blocked_until.items() if now >= u]:
            del self._blocked_until[address]
        for address in [
            a for a, w in self._failures.items() if not w or now - w[-1] >= self.cooldown
        ]:
            del self._failures[address]
