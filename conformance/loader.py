"""Load scenario files and target profiles: YAML -> JSON Schema -> model.

Every problem is reported with file, line and column, the offending lines, and what was
expected; all problems of a file are reported at once.
"""

from __future__ import annotations

import difflib
import json
import re
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .budget import state_dir
from .errors import Location, ProfileError, ScenarioError
from .model import (
    VARIABLE,
    Deviation,
    Expectation,
    KeyRef,
    Level,
    Profile,
    ReplyMatch,
    Requirement,
    Scenario,
    Step,
    Tls,
)
from .yamlsrc import SourceList, SourceMap, excerpt_at, key_location, load_yaml, locate

SCENARIO_SUFFIX = ".scenario.yaml"
ACTIONS = (
    "connect",
    "reconnect",
    "ehlo",
    "helo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "rset",
    "noop",
    "quit",
    "raw",
    "repeat",
    "pipeline",
    "observe",
    "login",
    "wait",
    "generate",
)
VARIABLE_ROOTS = {"domains", "recipients", "limits", "target"}
# What a step is expected to do when the scenario does not say: succeed.
DEFAULT_EXPECT: dict[str, ReplyMatch | None] = {
    "connect": ReplyMatch(code=(220,)),
    "reconnect": ReplyMatch(code=(220,)),
    "ehlo": ReplyMatch(code=(250,)),
    "helo": ReplyMatch(code=(250,)),
    "starttls": ReplyMatch(code=(220,), tls=True),
    "auth": ReplyMatch(code=(235,)),
    "login": ReplyMatch(code=(235,)),
    "mail": ReplyMatch(reply_class=(2,)),
    "rcpt": ReplyMatch(reply_class=(2,)),
    "data": ReplyMatch(reply_class=(2,)),
    "rset": ReplyMatch(reply_class=(2,)),
    "noop": ReplyMatch(reply_class=(2,)),
    "wait": None,
    "quit": None,
    "raw": None,
    "repeat": None,
    "pipeline": None,
    "observe": None,
    "generate": None,
}


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("conformance").joinpath(f"schema/{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def variable_transforms() -> list[str]:
    """The transform names a variable may carry, from the scenario schema."""
    names: list[str] = schema("scenario")["$defs"]["variable_transform"]["enum"]
    return names


def _problem(text: str, location: Location | None, message: str) -> str:
    where = f"{location}: " if location else ""
    excerpt = excerpt_at(text, location)
    return f"{where}{message}" + (f"\n{excerpt}" if excerpt else "")


def _keys(node: Any, root: dict[str, Any], seen: frozenset[str] = frozenset()) -> set[str]:
    """The keys a schema object allows: its own ``properties`` and those of what it refers to
    (``$ref``) or combines (``allOf``, ``anyOf``, ``oneOf``): an ``expect`` takes the reply
    fields it refers to besides its own ``should``."""
    if not isinstance(node, dict):
        return set()
    found = set(node.get("properties", {}))
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        found |= _keys(target, root, seen | {ref})
    for combined in ("allOf", "anyOf", "oneOf"):
        for branch in node.get(combined, []):
            found |= _keys(branch, root, seen)
    return found


def _closest_first(unknown: str, allowed: set[str]) -> list[str]:
    return sorted(allowed, key=lambda k: (-difflib.SequenceMatcher(None, unknown, k).ratio(), k))


def _describe(error: jsonschema.ValidationError, root: dict[str, Any] | None = None) -> str:
    """A schema error in words a scenario author can act on."""
    path = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties" or error.validator == "unevaluatedProperties":
        allowed = _keys(error.schema, root or {}) if isinstance(error.schema, dict) else set()
        unexpected = re.findall(r"'([^']+)'", error.message.partition("(")[2])
        if not allowed or not unexpected:
            return f"at {path}: {error.message}"
        names = ", ".join(f"'{u}'" for u in unexpected)
        ordered = _closest_first(unexpected[0], allowed)
        guess = difflib.get_close_matches(unexpected[0], allowed, n=1)
        did_you_mean = f" (did you mean '{guess[0]}'?)" if guess else ""
        what = (
            "was unexpected, an unknown key"
            if len(unexpected) == 1
            else "were unexpected, unknown keys"
        )
        return (
            f"at {path}: {names} {what}{did_you_mean}; valid keys here, closest first: "
            f"{', '.join(ordered)}"
        )
    if error.validator == "required":
        return f"at {path}: {error.message}"
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = max(error.context, key=lambda e: len(list(e.absolute_path)))  # the most specific
        return f"at {path}: {best.message}"
    return f"at {path}: {error.message}"


def _schema_problems(doc: Any, text: str, name: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema(name))
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        location = locate(doc, path)
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            unexpected = re.findall(r"'([^']+)'", error.message.partition("(")[2])
            if unexpected:
                location = key_location(doc, path, unexpected[0]) or location
        problems.append(_problem(text, location, _describe(error, schema(name))))
    return problems


def _step_shape_problems(steps: Any, text: str) -> list[str]:
    """Exactly one action per step, said plainly (the schema's oneOf message is opaque)."""
    problems: list[str] = []
    if not isinstance(steps, SourceList):
        return problems
    for step, location in zip(steps, steps.item_locations, strict=True):
        if not isinstance(step, SourceMap):
            continue
        actions = [k for k in step if k in ACTIONS]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            problems.append(
                _problem(
                    text,
                    location,
                    f"a step needs exactly one action ({', '.join(ACTIONS)}); found {found}",
                )
            )
        if "repeat" in step and isinstance(step["repeat"], SourceMap):
            problems += _step_shape_problems(step["repeat"].get("steps"), text)
        if "pipeline" in step and isinstance(step["pipeline"], SourceMap):
            group = step["pipeline"].get("steps")
            problems += _step_shape_problems(group, text)
            problems += _pipeline_problems(group, text)
    return problems


def _checks_problems(scenario: SourceMap, doc: Any, index: int, text: str) -> list[str]:
    """A step's ``checks:`` must name one of its scenario's own requirements."""
    named = scenario.get("requirements") or []
    problems = []
    for j, step in enumerate(scenario.get("steps") or []):
        if isinstance(step, SourceMap) and "checks" in step and step["checks"] not in named:
            where = locate(doc, ["scenarios", index, "steps", j, "checks"])
            problems.append(
                _problem(
                    text,
                    where,
                    f"checks: {step['checks']!r} is not a requirement of this scenario; "
                    f"expected one of: {', '.join(map(str, named))}",
                )
            )
    return problems


PIPELINED = ("mail", "rcpt", "rset", "noop", "data")


def _pipeline_problems(group: Any, text: str) -> list[str]:
    """RFC 2920 §3.1: DATA (and NOOP) can only be the last command of a group."""
    problems: list[str] = []
    if not isinstance(group, SourceList):
        return problems
    for index, (step, location) in enumerate(zip(group, group.item_locations, strict=True)):
        if not isinstance(step, SourceMap):
            continue
        kind = next((k for k in step if k in ACTIONS), None)
        if kind is not None and kind not in PIPELINED:
            problems.append(
                _problem(
                    text,
                    location,
                    f"a pipeline holds {', '.join(PIPELINED)} steps only; found {kind}",
                )
            )
        elif kind in ("data", "noop") and index != len(group) - 1:
            problems.append(
                _problem(
                    text, location, f"{kind} must be the last step of a pipeline (RFC 2920 §3.1)"
                )
            )
    return problems


def _variable_problems(value: Any, doc: Any, path: list[str | int], text: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, str):
        for match in VARIABLE.finditer(value):
            transform = match.group(2)
            if transform is not None and transform not in variable_transforms():
                problems.append(
                    _problem(
                        text,
                        locate(doc, path),
                        f"unknown transform |{transform} in ${{{match.group(0)[2:-1]}}}: "
                        f"expected one of {', '.join(variable_transforms())}",
                    )
                )
            root = match.group(1).split(".")[0]
            if root not in VARIABLE_ROOTS:
                problems.append(
                    _problem(
                        text,
                        locate(doc, path),
                        f"unknown variable ${{{match.group(1)}}}: variables start with "
                        f"{', '.join(sorted(VARIABLE_ROOTS))} (keys are chosen by role, never spelt out)",
                    )
                )
                continue
            wrong = _variable_path_problem(match.group(1))
            if wrong:
                problems.append(_problem(text, locate(doc, path), wrong))
        if "${" in VARIABLE.sub("", value):
            problems.append(
                _problem(
                    text,
                    locate(doc, path),
                    "malformed ${...} variable: only ${name.name} is allowed",
                )
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            problems += _variable_problems(v, doc, [*path, k], text)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problems += _variable_problems(v, doc, [*path, i], text)
    return problems


def variable_paths() -> dict[str, tuple[str, ...]]:
    """What may follow each root of a ``${...}`` variable: what the profile schema can hold."""
    properties = schema("profile")["properties"]
    return {
        "domains": tuple(sorted(properties["domains"]["properties"])),
        "limits": tuple(sorted(properties["limits"]["properties"])),
        "target": ("host",),
    }


def _variable_path_problem(name: str) -> str | None:
    """Why ``${name}`` can never be filled from a profile (a typo: ``domains.verifed``), or None.

    Without this, a typo makes the scenario "not verified" on every target, and the run green.
    """
    root, _, rest = name.partition(".")
    if root == "recipients":
        if rest.isdigit():
            return None
        return f"${{{name}}}: a recipient is chosen by its index, e.g. ${{recipients.0}}"
    allowed = variable_paths().get(root, ())
    if rest in allowed:
        return None
    return (
        f"${{{name}}}: the profile has no {root}.{rest or '?'}; "
        f"expected one of: {', '.join(f'{root}.{a}' for a in allowed)}"
    )


def _level_problems(
    scenario: Any, requirements: dict[str, Requirement], doc: Any, index: int, text: str
) -> list[str]:
    """A MUST scenario must check some MUST requirement: failing it fails the run, which only
    a MUST of the contract or an RFC may do."""
    named = [r for r in scenario.get("requirements") or [] if r in requirements]
    if scenario.get("level") != "MUST" or not named:
        return []
    if any(requirements[r].level is Level.MUST for r in named):
        return []
    return [
        _problem(
            text,
            locate(doc, ["scenarios", index, "level"]),
            f"level MUST, but {', '.join(named)} {'is' if len(named) == 1 else 'are'} SHOULD: a "
            "scenario is MUST only when it checks a MUST requirement; make it SHOULD",
        )
    ]


def _policy_problems(policy: Any, doc: Any, index: int, text: str) -> list[str]:
    """A scenario's ``policy:`` names choices the profile schema declares, with their values."""
    if not isinstance(policy, dict):
        return []
    declared = schema("profile")["properties"]["policy"]["properties"]
    problems = []
    for name, value in policy.items():
        where = locate(doc, ["scenarios", index, "policy", name])
        if name not in declared:
            problems.append(
                _problem(
                    text,
                    where,
                    f"policy.{name} is not a choice a profile can declare; expected one of: "
                    f"{', '.join(sorted(declared))}",
                )
            )
        elif value not in declared[name]["enum"]:
            problems.append(
                _problem(
                    text,
                    where,
                    f"policy.{name}: {value!r} is not one of {', '.join(declared[name]['enum'])}",
                )
            )
    return problems


def _reply_match(raw: dict[str, Any]) -> ReplyMatch:
    code = raw.get("code")
    extensions = raw.get("extensions") or {}
    ids = raw.get("ids")
    return ReplyMatch(
        code=None if code is None else tuple(code) if isinstance(code, list) else (code,),
        reply_class=_classes(raw.get("class")),
        enhanced=raw.get("enhanced"),
        text=raw.get("text"),
        has_extensions=tuple(extensions.get("has", ())),
        lacks_extensions=tuple(extensions.get("lacks", ())),
        extension_values=tuple((extensions.get("values") or {}).items()),
        ids_count=None if ids is None else ids.get("count", "recipients"),
        ids_uuidv7=True if ids is None else ids.get("uuidv7", True),
        ids_line_length=True if ids is None else ids.get("line_length", True),
        enhanced_every_line=raw.get("enhanced_every_line", False),
        closed=raw.get("closed"),
        tls=raw.get("tls"),
        no_reply=raw.get("no_reply", False),
        refused=raw.get("refused"),
    )


def _classes(value: int | list[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(value) if isinstance(value, list) else (value,)


def _steps(raw_steps: SourceList) -> tuple[Step, ...]:
    steps = []
    for raw, location in zip(raw_steps, raw_steps.item_locations, strict=True):
        kind = next(k for k in raw if k in ACTIONS)
        args = raw[kind]
        if "expect" in raw:
            exp = dict(raw["expect"])
            should = exp.pop("should", None)
            expectation = Expectation(
                _reply_match(exp), None if should is None else _reply_match(should)
            )
        else:
            default = DEFAULT_EXPECT[kind]
            expectation = Expectation(default or ReplyMatch(), None, explicit=False)
        sub = _steps(args["steps"]) if kind in ("repeat", "pipeline") else ()
        steps.append(
            Step(
                kind,
                args,
                expectation,
                location,
                str(raw.get("name", "")),
                sub,
                str(raw.get("checks", "")),
            )
        )
    return tuple(steps)


def load_scenarios(
    path: Path, requirements: dict[str, Requirement] | None = None
) -> list[Scenario]:
    """Every scenario of one file; ScenarioError lists every problem found in it."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = load_yaml(path, ScenarioError)
    problems = _schema_problems(doc, text, "scenario")
    if isinstance(doc, SourceMap):
        for i, scenario in enumerate(doc.get("scenarios") or []):
            if isinstance(scenario, SourceMap):
                problems += _step_shape_problems(scenario.get("steps"), text)
                problems += _variable_problems(
                    scenario.get("steps"), doc, ["scenarios", i, "steps"], text
                )
                problems += _policy_problems(scenario.get("policy"), doc, i, text)
                problems += _checks_problems(scenario, doc, i, text)
                if requirements is not None:
                    problems += _level_problems(scenario, requirements, doc, i, text)
                    for j, rid in enumerate(scenario.get("requirements") or []):
                        if isinstance(rid, str) and rid not in requirements:
                            problems.append(
                                _problem(
                                    text,
                                    locate(doc, ["scenarios", i, "requirements", j]),
                                    f"unknown requirement {rid}: it must be listed in requirements.yaml",
                                )
                            )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ScenarioError(f"{path}: {count}:\n" + "\n".join(problems))
    assert isinstance(doc, SourceMap)
    scenarios = []
    for raw in doc["scenarios"]:
        scenarios.append(
            Scenario(
                id=raw["id"],
                title=raw["title"],
                requirements=tuple(raw["requirements"]),
                level=Level(raw["level"]),
                steps=_steps(raw["steps"]),
                location=raw.location,
                tags=tuple(raw.get("tags", ())),
                ports=tuple(raw["ports"]) if "ports" in raw else None,
                needs=tuple(raw.get("needs", ())),
                observer=bool(raw.get("observer", False)),
                destructive=bool(raw.get("destructive", False)),
                description=str(raw.get("description", "")),
                policy=tuple((str(k), str(v)) for k, v in (raw.get("policy") or {}).items()),
            )
        )
    return scenarios


def find_scenario_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob(f"*{SCENARIO_SUFFIX}") if p.is_file())
        else:
            found.append(path)
    return found


def load_profile(path: Path) -> Profile:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = load_yaml(path, ProfileError)
    problems = _schema_problems(doc, text, "profile")
    if isinstance(doc, SourceMap):
        for i, dev in enumerate(doc.get("deviations") or []):
            if isinstance(dev, dict) and isinstance(dev.get("expires"), str):
                try:
                    date.fromisoformat(dev["expires"])
                except ValueError:
                    problems.append(
                        _problem(
                            text,
                            locate(doc, ["deviations", i, "expires"]),
                            "expires must be a date, YYYY-MM-DD",
                        )
                    )
        pattern = doc.get("recipient_pattern")
        recipients = doc.get("recipients")
        if isinstance(pattern, str) and isinstance(recipients, list):
            domain = pattern.rpartition("@")[2].lower().rstrip(".")
            sinks = {str(r).rpartition("@")[2].lower().rstrip(".") for r in recipients}
            if domain not in sinks:
                problems.append(
                    _problem(
                        text,
                        locate(doc, ["recipient_pattern"]),
                        f"recipient_pattern must stay inside the recipients' domain "
                        f"({', '.join(sorted(sinks))}); {domain} is not one of them",
                    )
                )
        keys = doc.get("keys")
        if isinstance(keys, dict):
            for role, key in keys.items():
                if isinstance(key, dict) and "value" in key and role != "invalid":
                    problems.append(
                        _problem(
                            text,
                            key_location(doc, ["keys", role], "value"),
                            f"keys.{role}: a real key is never written in a profile; name its environment variable with env:",
                        )
                    )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ProfileError(f"{path}: {count}:\n" + "\n".join(problems))
    assert isinstance(doc, SourceMap)
    base = path.parent
    target = doc["target"]
    tls_raw = target.get("tls", {})
    tls = Tls(
        ca_file=(base / tls_raw["ca_file"]) if "ca_file" in tls_raw else None,
        system=bool(tls_raw.get("system", False)),
        insecure=bool(tls_raw.get("insecure", False)),
        server_name=tls_raw.get("server_name"),
    )
    if tls.ca_file is not None and not tls.ca_file.is_file():
        raise ProfileError(
            f"target.tls.ca_file: {tls.ca_file} does not exist",
            locate(doc, ["target", "tls", "ca_file"]),
            excerpt_at(text, locate(doc, ["target", "tls", "ca_file"])),
        )
    keys = {
        role: KeyRef(role, k.get("env"), k.get("value"), tuple(k.get("allowed_domains", ())))
        for role, k in doc["keys"].items()
    }
    observer = doc.get("observer")
    if observer is not None and observer.get("kind") == "maildir":
        observer = {"kind": "maildir", "path": str(base / observer["path"])}
    elif observer is not None and observer.get("kind") == "sink":
        host, port = str(observer.get("host", "127.0.0.1")), int(observer["port"])
        # Every pytest-xdist worker reads what the one sink (run by the controller) writes.
        folder = state_dir() / f"anypost-sink-{host}-{port}"
        observer = {"kind": "sink", "host": host, "port": str(port), "path": str(folder)}
    elif observer is not None:
        observer = None
    return Profile(
        file=str(path),
        name=str(doc.get("name", path.stem)),
        host=target["host"],
        ports=dict(target["ports"]),
        tls=tls,
        timeout=float(target.get("timeout", 10.0)),
        scenario_deadline=float(target.get("scenario_deadline", 120.0)),
        helo_name=str(target.get("helo_name", "conformance.anypost-harness.test")),
        keys=keys,
        domains=dict(doc["domains"]),
        recipients=tuple(doc["recipients"]),
        recipient_pattern=doc.get("recipient_pattern"),
        limits=dict(doc.get("limits", {})),
        budget_messages=int(doc.get("budget", {}).get("messages", 500)),
        generated=dict(doc.get("generated", {})),
        observer=observer,
        deviations=tuple(
            Deviation(d["scenario"], d["reason"], date.fromisoformat(d["expires"]))
            for d in doc.get("deviations", ())
        ),
        policy={str(k): str(v) for k, v in (doc.get("policy") or {}).items()},
    )


__all__ = ["find_scenario_files", "load_profile", "load_scenarios", "schema"]
