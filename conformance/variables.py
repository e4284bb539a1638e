"""The one variable syntax scenarios may use: ``${root.name}``, looked up in the profile.

Roots: ``domains``, ``recipients`` (by index), ``limits``, ``target``. Nothing is evaluated.
Keys are never variables: a step names a key by role and the driver redacts it.
"""

from __future__ import annotations

from typing import Any

from .model import VARIABLE, Profile


class MissingValue(LookupError):
    """The profile lacks a value the scenario needs: the scenario is "not verified"."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


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
        return VARIABLE.sub(lambda m: lookup(profile, m.group(1)), value)
    if isinstance(value, dict):
        return {k: resolve(v, profile) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, profile) for v in value]
    return value


def names_in(value: Any) -> set[str]:
    """Every variable a value refers to."""
    if isinstance(value, str):
        return {m.group(1) for m in VARIABLE.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()
