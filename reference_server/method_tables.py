"""What ``dir()`` gives aiosmtpd of a session and its handler: the protocol's names only.

aiosmtpd 1.4 builds its AUTH, hook and command tables in ``SMTP.__init__``, on every
connection, with ``inspect.getmembers`` and ``dir()`` over the session and the handler: every
attribute of both is fetched and sorted, to keep the few whose names start with ``smtp_``,
``auth_`` or ``handle_``. For this server's larger classes that was the largest cost of
opening a connection (300 µs of CPU here, against 180 µs for plain aiosmtpd's). A class
whose ``__dir__`` returns ``protocol_dir(self, prefixes)`` hands aiosmtpd just those names,
listed once per class; the tables it builds are the same. (A method added to a class after its
first session would not be listed: nothing here adds methods at run time.)
"""

from __future__ import annotations

_CLASS_NAMES: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def _class_names(cls: type, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    names = _CLASS_NAMES.get((cls, prefixes))
    if names is None:  # two sessions racing here compute the same tuple: no lock needed
        names = _CLASS_NAMES[cls, prefixes] = tuple(
            name for name in dir(cls) if name.startswith(prefixes)
        )
    return names


def protocol_dir(obj: object, prefixes: tuple[str, ...]) -> list[str]:
    """The names of ``obj`` (its class's, and its own) that start with one of ``prefixes``."""
    own = [name for name in getattr(obj, "__dict__", ()) if name.startswith(prefixes)]
    names = _class_names(type(obj), prefixes)
    return sorted({*names, *own}) if own else list(names)
