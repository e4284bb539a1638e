"""Every id a target gave out during one run, shared by every pytest-xdist worker.

The contract's ids identify one recipient's copy each ("every event for that copy references
it"), so no two copies may share one: not within a reply, not across connections, not across
the scenarios of a run. A scenario only sees its own replies; this registry, a file per target
and run under the state folder locked with ``flock`` (as the auth-failure budget is), lets every
scenario check its ids against every id the run has seen so far.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable

from .budget import read_all, state_dir


class IdRegistry:
    def __init__(self, target_key: str, run_id: str | None = None) -> None:
        run = run_id or os.environ.get("ANYPOST_CONFORMANCE_RUN", "local")
        digest = hashlib.sha256(f"{target_key}\0{run}".encode()).hexdigest()[:16]
        self.path = state_dir() / f"anypost-conformance-ids-{digest}.txt"

    def claim(self, ids: Iterable[str]) -> set[str]:
        """Record ``ids`` for this run; return those some earlier reply of the run carried."""
        wanted = list(ids)
        if not wanted:
            return set()
        # One id a line, appended: a claim reads the file once and writes only what is new.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                seen = set(read_all(fd).decode("utf-8", "surrogateescape").split())
                repeated = {i for i in wanted if i in seen}
                fresh = [i for i in dict.fromkeys(wanted) if i not in seen]
                if fresh:
                    os.write(
                        fd, "".join(f"{i}\n" for i in fresh).encode("utf-8", "surrogateescape")
                    )
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return repeated
