"""conformance.md: the report as markdown, every text escaped, paths relative to the scenario
root. Transcripts go in code fences longer than any backtick run inside them."""

from __future__ import annotations

import re
from typing import Any

from . import report_view as view

# Characters markdown (CommonMark, GitHub's tables) reads as syntax anywhere in a line; < > &
# become entities so a target's "<CRLF>" is shown, not swallowed as an HTML tag. Escaped text
# never starts a line here, so the line-start markers (# - + 1.) need no escape.
_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape(text: object) -> str:
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _SPECIAL.sub(r"\\\1", s)
    return " ".join(s.splitlines())


def fence(text: str) -> list[str]:
    runs = [len(m) for m in re.findall(r"`+", text)]
    ticks = "`" * max(3, max(runs, default=0) + 1)
    return [ticks + "text", text, ticks]


def markdown(doc: dict[str, Any]) -> str:
    def rel(text: object) -> str:
        return view.relative(doc, str(text))

    out = ["# Anypost SMTP conformance report", ""]
    out += [
        f"- **{escape(label)}**: {escape(rel(value))}" for label, value in view.target_facts(doc)
    ]
    out += [
        "",
        "**Summary**: "
        + (
            ", ".join(f"{n} {escape(view.LABELS[k])}" for k, n in view.counts(doc)) or "nothing ran"
        ),
        "",
        "## Requirements",
        "",
        "| id | level | verdict | requirement |",
        "|---|---|---|---|",
    ]
    for row in doc["requirements"]:
        out.append(
            f"| {escape(row['id'])} | {escape(row['level'])} | {escape(row['verdict'])} "
            f"| {escape(row['text'])} |"
        )
    texts = view.requirement_texts(doc)
    records = view.ordered(doc["scenarios"])
    failing = [
        r
        for r in records
        if view.kind(r) in ("failed", "error", "blocked", "inconclusive", "known")
    ]
    warned = [r for r in records if view.kind(r) == "warned"]
    for title, group in (("Failures", failing), ("SHOULD warnings", warned)):
        if not group:
            continue
        out += ["", f"## {title}", ""]
        for r in group:
            out += _scenario(r, texts, rel)
    found = view.deviations(doc)
    if found:
        out += ["", "## Deviations declared by the profile", ""]
        out += [
            f"- {escape(state)}: {escape(r['scenario'])} \\[{escape(r['port'])}\\] "
            f"({escape(r['verdict'])}): {escape(rel(r['deviation']))}"
            for state, r in found
        ]
    not_verified = [r for r in records if view.kind(r) == "not verified"]
    if not_verified:
        out += ["", "## Not verified", ""]
        out += [
            f"- {escape(r['scenario'])} \\[{escape(r['port'])}\\]: {escape(rel(r['reason']))}"
            for r in not_verified
        ]
    passed = [r for r in records if view.kind(r) == "passed"]
    if passed:
        out += ["", "## Passed", ""]
        out += [
            f"- {escape(r['scenario'])} \\[{escape(r['port'])}\\] "
            f"({escape(', '.join(r['requirements']))})"
            for r in passed
        ]
    return "\n".join(out) + "\n"


def _scenario(r: dict[str, Any], texts: dict[str, str], rel: Any) -> list[str]:
    out = [
        f"### {escape(r['scenario'])} \\[{escape(r['port'])}\\]: {escape(view.LABELS[view.kind(r)])}",
        "",
        f"{escape(r['title'])} ({escape(r['level'])}, {escape(rel(r['location']))})",
        "",
    ]
    out += [f"- **{escape(rid)}**: {escape(texts.get(rid, '?'))}" for rid in r["requirements"]]
    if r.get("blocked_by"):
        out += [
            "",
            f"Blocked by {escape(r['blocked_by'])}: {escape(texts.get(r['blocked_by'], '?'))}",
        ]
    if r.get("reason"):
        out += ["", f"Reason: {escape(rel(r['reason']))}"]
    if r.get("deviation"):
        out += ["", f"Deviation: {escape(rel(r['deviation']))}"]
    for f in r["failures"] + r["should_failures"]:
        out += [
            "",
            f"{escape(f['level'])} step {escape(f['step'])} ({escape(rel(f['location']))}):",
        ]
        out += [f"- {escape(rel(p))}" for p in f["problems"]]
    out += ["", *fence(r["transcript"]), ""]
    return out
