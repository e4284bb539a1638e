"""conformance.html: the document a vendor hands over. One self-contained file (inline style and
script, nothing fetched): who was tested and how, the summary, the requirements, then every
scenario run, failures first, with filters by verdict and area."""

from __future__ import annotations

from html import escape
from typing import Any

from . import report_view as view

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}
h1{margin-bottom:.2em}table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;
vertical-align:top;border-bottom:1px solid #ddd}th{background:#f4f4f4}
.facts th{width:16em;background:none}
.badge{display:inline-block;padding:3px 10px;margin:2px;border-radius:4px;font-weight:bold}
.k-failed,.k-error,.k-blocked{background:#fdd}.k-inconclusive,.k-known,.k-warned{background:#ffd}
.k-passed{background:#dfd}.k-not-verified{background:#def}
.scenario{margin:.5em 0;padding:.3em .8em;border-left:6px solid #ccc}
.scenario.k-failed,.scenario.k-error{border-color:#c00}.scenario.k-passed{border-color:#080}
.scenario summary{cursor:pointer;font-weight:bold}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}
.problem{color:#a00}.where{font-family:monospace;color:#555}
.filters label{margin-right:1em}.warning{background:#fdd;padding:.5em;font-weight:bold}
"""

# Filters: a scenario is shown when its verdict and its area are both ticked.
_SCRIPT = """
function applyFilters(){
  var on=function(n){var s={};document.querySelectorAll('input[name='+n+']').forEach(
    function(i){if(i.checked){s[i.value]=1}});return s};
  var kinds=on('kind'),areas=on('area'),shown=0;
  document.querySelectorAll('.scenario').forEach(function(e){
    var v=kinds[e.dataset.kind]&&areas[e.dataset.area];e.hidden=!v;if(v){shown++}});
  document.getElementById('shown').textContent=shown;
}
document.querySelectorAll('.filters input').forEach(function(i){
  i.addEventListener('change',applyFilters)});
applyFilters();
"""


def _css_kind(kind: str) -> str:
    return "k-" + kind.replace(" ", "-")


def to_html(doc: dict[str, Any]) -> str:
    def rel(text: object) -> str:
        return escape(view.relative(doc, str(text)))

    texts = view.requirement_texts(doc)
    records = view.ordered(doc["scenarios"])
    interrupted = (doc.get("run") or {}).get("interrupted")
    insecure = doc.get("target", {}).get("insecure")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width'>",
        f"<title>Anypost SMTP conformance: {escape(str(doc['target'].get('name', '')))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Anypost SMTP conformance report</h1>",
    ]
    if interrupted:
        parts.append(
            "<p class='warning'>This run was interrupted: the report covers only the scenarios "
            "that ran.</p>"
        )
    if insecure:
        parts.append(
            "<p class='warning'>The target's TLS certificate was NOT verified "
            "(insecure: true in the profile).</p>"
        )
    parts.append("<table class='facts'>")
    parts += [
        f"<tr><th>{escape(label)}</th><td>{rel(value)}</td></tr>"
        for label, value in view.target_facts(doc)
    ]
    parts.append("</table>")
    parts.append("<h2>Summary</h2><p id='summary'>")
    parts += [
        f"<span class='badge {_css_kind(k)}'>{n} {escape(view.LABELS[k])}</span>"
        for k, n in view.counts(doc)
    ]
    parts.append("</p>")
    parts += _requirements(doc)
    parts += _deviations_and_not_verified(doc, rel)
    parts.append("<h2>Scenario runs</h2>")
    parts += _filters(records)
    parts += [_scenario(r, texts, rel) for r in records]
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _requirements(doc: dict[str, Any]) -> list[str]:
    out = [
        "<h2>Requirements</h2><table id='requirements'>",
        "<tr><th>id</th><th>level</th><th>verdict</th><th>requirement</th><th>runs</th></tr>",
    ]
    for row in doc["requirements"]:
        out.append(
            f"<tr class='{_css_kind(row['verdict'])}'><td>{escape(row['id'])}</td>"
            f"<td>{escape(row['level'])}</td><td>{escape(row['verdict'])}</td>"
            f"<td>{escape(row['text'])}</td><td>{len(row['scenarios'])}</td></tr>"
        )
    out.append("</table>")
    return out


def _deviations_and_not_verified(doc: dict[str, Any], rel: Any) -> list[str]:
    out: list[str] = []
    found = view.deviations(doc)
    if found:
        out.append("<h2>Deviations declared by the profile</h2><ul id='deviations'>")
        out += [
            f"<li><b>{escape(state)}</b>: {escape(r['scenario'])} [{escape(r['port'])}] "
            f"({escape(r['verdict'])}): {rel(r['deviation'])}</li>"
            for state, r in found
        ]
        out.append("</ul>")
    not_verified = [r for r in doc["scenarios"] if view.kind(r) == "not verified"]
    if not_verified:
        out.append("<h2>Not verified</h2><ul id='not-verified'>")
        out += [
            f"<li>{escape(r['scenario'])} [{escape(r['port'])}]: {rel(r['reason'])}</li>"
            for r in sorted(not_verified, key=lambda r: (r["scenario"], r["port"]))
        ]
        out.append("</ul>")
    return out


def _filters(records: list[dict[str, Any]]) -> list[str]:
    kinds = [k for k in view.ORDER if any(view.kind(r) == k for r in records)]
    areas = sorted({view.area(r) for r in records})
    out = ["<div class='filters'><p>Verdict: "]
    out += [
        f"<label><input type='checkbox' name='kind' value='{escape(k)}' checked> "
        f"{escape(view.LABELS[k])}</label>"
        for k in kinds
    ]
    out.append("</p><p>Area: ")
    out += [
        f"<label><input type='checkbox' name='area' value='{escape(a)}' checked> {escape(a)}</label>"
        for a in areas
    ]
    out.append(f"</p><p><span id='shown'>{len(records)}</span> of {len(records)} shown</p></div>")
    return out


def _scenario(r: dict[str, Any], texts: dict[str, str], rel: Any) -> str:
    kind = view.kind(r)
    bad = kind in ("failed", "error", "blocked", "inconclusive")
    out = [
        f"<details class='scenario {_css_kind(kind)}' data-kind='{escape(kind)}' "
        f"data-area='{escape(view.area(r))}'{' open' if bad else ''}>",
        f"<summary>{escape(view.LABELS[kind].upper())}: {escape(r['scenario'])} "
        f"[{escape(r['port'])}] {escape(' '.join(r['requirements']))}</summary>",
        f"<p>{escape(r['title'])} ({escape(r['level'])}, "
        f"<span class='where'>{rel(r['location'])}</span>, {r.get('duration', 0):.2f}s)</p>",
        "<ul>",
    ]
    out += [
        f"<li><b>{escape(rid)}</b>: {escape(texts.get(rid, '?'))}</li>" for rid in r["requirements"]
    ]
    out.append("</ul>")
    if r.get("blocked_by"):
        out.append(
            f"<p>Blocked by <b>{escape(r['blocked_by'])}</b>: "
            f"{escape(texts.get(r['blocked_by'], '?'))}</p>"
        )
    if r.get("reason"):
        out.append(f"<p>Reason: {rel(r['reason'])}</p>")
    if r.get("deviation"):
        out.append(f"<p>Deviation: {rel(r['deviation'])}</p>")
    for f in r["failures"] + r["should_failures"]:
        out.append(
            f"<p>{escape(f['level'])} step <code>{escape(f['step'])}</code> at "
            f"<span class='where'>{rel(f['location'])}</span></p><ul>"
        )
        out += [f"<li class='problem'>{rel(p)}</li>" for p in f["problems"]]
        out.append("</ul>")
    if r.get("steps"):
        out.append("<table class='steps'><tr><th>step</th><th>reply</th><th></th></tr>")
        out += [
            f"<tr><td>{escape(s['step'])}</td><td>{escape(s['reply'])}</td>"
            f"<td>{escape(s['verdict'])}</td></tr>"
            for s in r["steps"]
        ]
        out.append("</table>")
    out.append(f"<pre>{escape(r['transcript'])}</pre></details>")
    return "\n".join(out)
