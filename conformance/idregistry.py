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

# What this process has read of each registry file: the file's identity, the octets read,
# and the ids in them. Only used under the file's lock.
_READ: dict[str, tuple[tuple[int, int], int, set[str]]] = {}


class IdRegistry:
    def __init__(self, target_key: str, run_id: str | None = None) -> None:
        run = run_id or os.environ.get("ANYPOST_CONFORMANCE_RUN", "local")
        digest = hashlib.sha256(f"{target_key}\0{run}".encode()).hexdigest()[:16]
        self.path = state_dir() / f"anypost-conformance-ids-{digest}.txt"

    def _seen(self, fd: int) -> tuple[set[str], int]:
        """Every id in the file (locked by the caller), and its length in octets."""
        status = os.fstat(fd)
        identity = (status.st_dev, status.st_ino)
        known = _READ.get(str(self.path))
        if known is None or known[0] != identity or known[1] > status.st_size:
            known = (identity, 0, set())  # a new file (another run, another folder)
        _, offset, seen = known
        while offset < status.st_size:
            chunk = os.pread(fd, status.st_size - offset, offset)
            if not chunk:
                break
            # Whole lines only: every writer appends whole lines under the lock.
            seen.update(chunk.decode("utf-8", "surrogateescape").split())
            offset += len(chunk)
        _READ[str(self.path)] = (identity, offset, seen)
        return seen, offset

    def claim(self, ids: Iterable[str]) -> set[str]:
        """Record ``ids`` for this run; return those some earlier reply of the run carried."""
        wanted = list(ids)
        if not wanted:
            return set()
        # One id a line, appended under the lock. What this process read before is kept (the
        # file only grows during a run), so a claim reads only what other workers added since.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                seen, end = self._seen(fd)
                repeated = {i for i in wanted if i in seen}
                fresh = [i for i in dict.fromkeys(wanted) if i not in seen]
                if fresh:
                    data = "".join(f"{i}\n" for i in fresh).encode("utf-8", "surrogateescape")
                    os.write(fd, data)
                    seen.update(fresh)
                    _READ[str(self.path)] = (_READ[str(self.path)][0], end + len(data), seen)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return repeated
