"""The one variable syntax scenarios may use: ``${root.name}``, looked up in the profile.

Roots: ``domains``, ``recipients`` (by index), ``limits``, ``target``. Nothing is evaluated.
Keys are never variables: a step names a key by role and the driver redacts it.

A variable may name one transform from a fixed list, ``${domains.verified|upper}``: spellings
of the same value that a conforming target must treat alike (RFC 5321 §2.4: domains are not
case sensitive) or may treat alike (a trailing dot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .model import VARIABLE, Profile


class MissingValue(LookupError):
    """The profile lacks a value the scenario needs: the scenario is "not verified"."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# The transforms, by name. The scenario schema lists the same names
# ($defs/variable_transform); tests/unit/test_catalogue_coverage.py checks they agree.
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "title": lambda v: v[:1].upper() + v[1:],  # one letter changes case: aCME.test -> Acme.test
    "trailing_dot": lambda v: v if v.endswith(".") else v + ".",
}


def lookup(profile: Profile, name: str) -> str:
    root, _, rest = name.partition(".")
    value: Any
    if root == "domains":
        value = profile.domains.get(rest)
    elif root == "recipients":
        index = int(rest) if rest.isdigit() else -1
        value = profile.recipients[index] if 0 <= index < len(profile.recipients) else None
    elif root == "limits":
        value = profile.limits.get(rest)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
    elif root == "target":
        value = {"host": profile.host}.get(rest)
    else:
        value = None
    if value is None:
        raise MissingValue(name)
    return str(value)


def resolve(value: Any, profile: Profile) -> Any:
    """``value`` with every ``${...}`` replaced, recursively through lists and mappings."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: _transformed(profile, m), value)
    if isinstance(value, dict):
        return {k: resolve(v, profile) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, profile) for v in value]
    return value


def _transformed(profile: Profile, match: Any) -> str:
    value = lookup(profile, match.group(1))
    transform = match.group(2)
    return value if transform is None else TRANSFORMS[transform](value)


def names_in(value: Any) -> set[str]:
    """Every variable a value refers to."""
    if isinstance(value, str):
        return {m.group(1) for m in VARIABLE.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()
