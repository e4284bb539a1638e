"""Email ids: ``email_`` + a lowercase UUIDv7 (RFC 9562 §5.7), one per recipient copy.

Clock and randomness are injected so tests can assert exact ids. Within one millisecond the
12-bit ``rand_a`` field counts up (RFC 9562 §6.2, method 1) so ids from one generator sort in
creation order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

PREFIX = "email_"


class IdGenerator:
    def __init__(
        self,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ms = clock_ms
        self._random = random_bytes
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def new_uuid(self) -> uuid.UUID:
        with self._lock:
            ms = self._clock_ms()
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    # Counter exhausted: borrow the next millisecond rather than repeat.
                    ms += 1
                    self._counter = int.from_bytes(self._random(2), "big") & 0x7FF
            else:
                self._counter = int.from_bytes(self._random(2), "big") & 0x7FF
            self._last_ms = ms
            rand_b = int.from_bytes(self._random(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= self._counter << 64
        value |= 0b10 << 62
        value |= rand_b
        return uuid.UUID(int=value)

    def new_id(self) -> str:
        return PREFIX + str(self.new_uuid())
