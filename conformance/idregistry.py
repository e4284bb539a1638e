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

from .budget import state_dir


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
        with open(self.path, "a+", encoding="utf-8", errors="surrogateescape") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                seen = set(fh.read().split())
                repeated = {i for i in wanted if i in seen}
                fresh = [i for i in dict.fromkeys(wanted) if i not in seen]
                if fresh:
                    fh.write("".join(f"{i}\n" for i in fresh))
                    fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return repeated
