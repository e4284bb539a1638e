"""What the human-readable reports (markdown, HTML) show, in the order they show it.

Pure functions over the conformance.json document: failures first, paths relative to the scenario
root (a report is handed to a customer: no machine's paths in it), the target's facts as label and
value pairs. The renderers (``report_md``, ``report_html``) only format.
"""

from __future__ import annotations

from typing import Any

from .console import outcome_of

# Scenario runs in the order a reader needs them: what is wrong first.
ORDER = (
    "failed",
    "error",
    "blocked",
    "inconclusive",
    "known",
    "warned",
    "not verified",
    "passed",
)
LABELS = {
    "failed": "failed",
    "error": "harness error",
    "blocked": "blocked",
    "inconclusive": "inconclusive",
    "known": "known deviation",
    "warned": "passed with SHOULD warnings",
    "not verified": "not verified",
    "passed": "passed",
}


def kind(record: dict[str, Any]) -> str:
    return outcome_of(record)


def ordered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(
        records, key=lambda r: (rank.get(kind(r), len(ORDER)), r["scenario"], str(r["port"]))
    )


def area(record: dict[str, Any]) -> str:
    return str(record["scenario"]).split("/", 1)[0]


def relative(doc: dict[str, Any], text: str) -> str:
    """``text`` with the scenario root (and the profile's folder) taken out of every path."""
    root = (doc.get("run") or {}).get("scenario_root") or ""
    if root:
        text = text.replace(root.rstrip("/") + "/", "")
    profile = str(doc.get("target", {}).get("profile") or "")
    if "/" in profile:
        text = text.replace(profile.rsplit("/", 1)[0] + "/", "")
    return text


def counts(doc: dict[str, Any]) -> list[tuple[str, int]]:
    found: dict[str, int] = {}
    for r in doc["scenarios"]:
        found[kind(r)] = found.get(kind(r), 0) + 1
    return [(k, found[k]) for k in ORDER if k in found]


def target_facts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The header: who was tested, with what, when, and how far to trust it."""
    target = doc.get("target", {})
    run = doc.get("run") or {}
    facts = [
        ("target", str(target.get("name", "?"))),
        ("host", str(target.get("host", "?"))),
        ("ports", ", ".join(f"{n} {p}" for n, p in (target.get("ports") or {}).items())),
        (
            "TLS certificate",
            "NOT verified (insecure: true in the profile)"
            if target.get("insecure")
            else "verified",
        ),
        ("profile", str(target.get("profile", "?")).rsplit("/", 1)[-1]),
        ("harness", f"anypost-conformance {doc['harness']['version']}"),
    ]
    catalogue = run.get("catalogue")
    if catalogue:
        facts.append(
            ("catalogue", f"{catalogue['files']} scenario file(s), sha256 {catalogue['sha256']}")
        )
    facts.append(("date", str(doc.get("generated_at", "?"))))
    facts.append(("strict", "yes (SHOULD fails)" if run.get("strict") else "no (SHOULD warns)"))
    if run.get("interrupted"):
        facts.append(("run", "INTERRUPTED: this report covers only the scenarios that ran"))
    probe = target.get("probe") or {}
    if "error" in probe and isinstance(probe["error"], str):
        facts.append(("probe", probe["error"]))
    for name, seen in probe.items():
        if not isinstance(seen, dict):
            continue
        prefix = f"port {name} ({seen.get('port', '?')})"
        if seen.get("error"):
            facts.append((prefix, f"unreachable: {seen['error']}"))
            continue
        facts.append((f"{prefix} banner", str(seen.get("banner", "?"))))
        facts.append((f"{prefix} EHLO", ", ".join(seen.get("extensions", [])) or "none"))
        tls = seen.get("tls") or {}
        if tls:
            facts.append(
                (
                    f"{prefix} TLS",
                    f"{tls.get('version', '?')}, {tls.get('cipher', '?')}, "
                    f"certificate {tls.get('certificate_subject', '?')}",
                )
            )
            facts.append(
                (f"{prefix} EHLO after TLS", ", ".join(seen.get("extensions_after_tls", [])))
            )
        else:
            facts.append((f"{prefix} TLS", "no STARTTLS offered"))
    return facts


def deviations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(known|stale|expired, record) for each run the profile declares a deviation for."""
    found = []
    for r in doc["scenarios"]:
        note = r.get("deviation") or ""
        if note:
            found.append((note.split(" ", 1)[0], r))
    return found


def requirement_texts(doc: dict[str, Any]) -> dict[str, str]:
    return {row["id"]: row["text"] for row in doc.get("requirements", [])}
