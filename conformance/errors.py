"""The harness's exceptions, one tree::

    ConformanceError
    ├── SourceError            a YAML file is wrong (the author's fault): file, line, column
    │   ├── ScenarioError      a scenario file
    │   └── ProfileError       a target profile
    ├── TargetError            the target or the network misbehaved (the environment's fault)
    │   └── TransportError     a connection failed, timed out, closed, or spoke garbage
    └── BudgetError            the run's message budget is spent

Every exception pickles (pytest-xdist ships them between processes) and its message says what
to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConformanceError(Exception):
    """Base of every error the harness raises on purpose."""


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SourceError(ConformanceError):
    def __init__(self, message: str, location: Location | None = None, excerpt: str = "") -> None:
        self.message = message
        self.location = location
        self.excerpt = excerpt
        super().__init__(message, location, excerpt)

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        text = f"{where}{self.message}"
        if self.excerpt:
            text += "\n" + self.excerpt
        return text


class ScenarioError(SourceError):
    """A scenario file does not load: fix the file at the location given."""


class ProfileError(SourceError):
    """A target profile does not load: fix the profile at the location given."""


class TargetError(ConformanceError):
    """The target could not be used (unreachable at start, for instance)."""


class TransportError(TargetError):
    """A network operation failed; ``closed`` says whether the connection is gone.

    ``dropped`` is True when the peer closed or reset the connection (which a target may do for
    reasons of its own: the step is inconclusive when it was not under test), False for
    timeouts, failed handshakes and garbage (the target misbehaved).
    """

    def __init__(self, message: str, closed: bool = True, dropped: bool = False) -> None:
        self.message = message
        self.closed = closed
        self.dropped = dropped
        super().__init__(message, closed, dropped)

    def __str__(self) -> str:
        return self.message


class BudgetError(ConformanceError):
    """The profile's message budget for this run is spent: no more DATA is sent."""
