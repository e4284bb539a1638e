"""The harness's overhead, in one run, as ratios.

1. The engine running a scenario against the time a bare aiosmtplib script takes for the same
   exchange against the same server. Goal: at most 1.2x. The two alternate run by run within
   each round, and the ratio of the median rounds is reported: on a machine shared with other
   jobs, rounds of one then rounds of the other met different loads (two runs of the same code
   a minute apart gave 1.02 and 1.22).
2. The whole catalogue through the CLI with -n 2 against -n 0. Goal: -n 2 is faster.
3. The CI gate against a target that blocks after 5 failed logins for 20 s (the non-destructive
   catalogue, a fresh bundled server per run): -n 2 against -n 0. Goal: at most 0.75x, because
   the scenarios that spend the auth-failure budget run in a lane of their own that starts
   first, and its cooldown waits overlap the rest of the catalogue on the other worker.

Run: python -m benchmarks.bench_engine [--rounds N] [--only-budget]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

from conformance.bundled import BundledTarget
from conformance.engine import run_scenario
from conformance.loader import load_profile, load_scenarios
from conformance.model import Profile, Scenario

from . import timeline
from .common import ROOT, median_ratio, write
from .latency_proxy import LatencyProxy

SCENARIO = "starttls/authenticated-submission"


async def bare_session(port: int, context: ssl.SSLContext, blob: bytes) -> None:
    """What the scenario does, by hand: the floor the engine is measured against."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, timeout=10, tls_context=context
    )
    await smtp.connect()
    await smtp.execute_command(b"EHLO", b"client.test")
    await smtp.starttls(server_hostname="localhost")
    await smtp.execute_command(b"EHLO", b"client.test")
    await smtp.execute_command(b"AUTH", b"PLAIN", blob)
    await smtp.execute_command(b"MAIL", b"FROM:<probe@acme.test>")
    await smtp.execute_command(b"RCPT", b"TO:<rcpt0@sink.test>")
    message = (
        b"From: Conformance <probe@acme.test>\r\nTo: rcpt0@sink.test\r\n"
        b"Subject: anypost conformance probe\r\n\r\nSent over STARTTLS.\r\n"
    )
    assert smtp.protocol is not None  # connected above
    await smtp.protocol.execute_data_command(message, timeout=10)
    await smtp.quit()


def load(profile_path: Path) -> tuple[Profile, Scenario]:
    profile = load_profile(profile_path)
    scenario = next(
        s
        for f in (ROOT / "scenarios").rglob("*.scenario.yaml")
        for s in load_scenarios(f)
        if s.id == SCENARIO
    )
    return profile, scenario


async def paired_round(
    profile: Profile, scenario: Scenario, port: int, ca: str, key: str, runs: int, first: str
) -> tuple[float, float]:
    """One round: ``runs`` engine runs and ``runs`` bare sessions, one of each in turn (which
    goes first alternates), so that both meet the same moments of a shared machine's load.
    Seconds of the engine's runs and of the bare sessions.

    Loading is done once per run by the plugin, and the bare script's TLS context once per
    round, so both are left out of the timing."""
    context = ssl.create_default_context(cafile=ca)
    blob = base64.b64encode(f"\0anypost\0{key}".encode())
    engine_seconds = bare_seconds = 0.0
    for run in range(runs):
        pair = ("engine", "bare") if (run % 2 == 0) == (first == "engine") else ("bare", "engine")
        for which in pair:
            started = time.perf_counter()
            if which == "engine":
                outcome = await run_scenario(scenario, profile, "submission")
                assert outcome.verdict.value == "passed", outcome.summary()
                engine_seconds += time.perf_counter() - started
            else:
                await bare_session(port, context, blob)
                bare_seconds += time.perf_counter() - started
    return engine_seconds, bare_seconds


def catalogue(workers: str | None, report: Path) -> float:
    command = [sys.executable, "-m", "conformance", "run", "-q", "--report-dir", str(report)]
    if workers:
        command += ["-n", workers]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"catalogue run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


BUDGET_THRESHOLD = 5
BUDGET_COOLDOWN = 20.0


def budget_catalogue(
    workers: str | None, tmp: Path, delay: float = 0.0
) -> tuple[float, dict[str, Any]]:
    """The non-destructive catalogue against a fresh bundled server with a 5-failure / 20 s
    block (fresh: the server and the budget file remember no earlier run); with ``delay``,
    reached through a relay that delays every chunk that much each way. Returns the time and
    what it went on (``benchmarks.timeline``: the counted failed logins, the floor, the waits,
    each worker's busy and idle time)."""
    target = BundledTarget(tmp / "target", threshold=BUDGET_THRESHOLD, cooldown=BUDGET_COOLDOWN)
    profile_path = target.start()
    proxy = None
    try:
        if delay:
            proxy = LatencyProxy(target.ports, delay)
            doc = yaml.safe_load(profile_path.read_text())
            doc["target"]["ports"] = dict(zip(doc["target"]["ports"], proxy.start(), strict=True))
            profile_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        trace = tmp / "timeline.jsonl"
        env = {
            **os.environ,
            **target.env,
            "ANYPOST_CONFORMANCE_STATE": str(tmp / "state"),
            # The timeline only notes times (a line per scenario start and end, and per budget
            # event); the run is the one a user makes.
            timeline.ENV: str(trace),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "conformance", "run", "-q", "--target", str(profile_path)]
        command += ["--report-dir", str(tmp / "report")] + (["-n", workers] if workers else [])
        command += ["--", "-p", "benchmarks.timeline"]
        wall = time.time()
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, env=env
        )
        elapsed = time.perf_counter() - started
    finally:
        if proxy is not None:
            proxy.stop()
        target.stop()
    if done.returncode != 0:
        raise SystemExit(
            f"budget run (-n {workers or 0}, delay {delay}s) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    found = timeline.analyse(
        timeline.read(trace), wall, wall + elapsed, BUDGET_THRESHOLD, BUDGET_COOLDOWN
    )
    return elapsed, found


# A CI job reaching a staging target over the internet: 15 ms each way (30 ms round trip).
NETWORK_DELAY = 0.015


PLACES = {"loopback": 0.0, "network_30ms_rtt": NETWORK_DELAY}


def budget_rounds(rounds: int, places: tuple[str, ...] = tuple(PLACES)) -> dict[str, object]:
    """-n 2 against -n 0 on the 5-failure / 20 s target, on loopback and at a network distance.

    The waits are a floor no schedule goes below: the budget admits threshold - 1 = 4 failed
    logins per 20 s cooldown, so F counted failed logins cannot all be made before
    floor((F - 1) / 4) x 20 s; each run counts F from its own timeline and reports its time
    against that floor. What the lane saves is the rest of the catalogue, run meanwhile on the
    other worker; -n 2 cannot beat max(floor, rest) plus pytest-xdist's start and end.
    """
    found: dict[str, object] = {
        "budget_target": {"threshold": BUDGET_THRESHOLD, "cooldown": BUDGET_COOLDOWN}
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in places:
            delay = PLACES[name]
            serial: list[float] = []
            parallel: list[float] = []
            spent: dict[str, list[dict[str, Any]]] = {"n0": [], "n2": []}
            for round_ in range(rounds):
                for workers in (None, "2") if round_ % 2 == 0 else ("2", None):
                    folder = Path(tmp) / f"budget-{name}-{round_}-{workers}"
                    elapsed, where = budget_catalogue(workers, folder, delay)
                    (parallel if workers else serial).append(elapsed)
                    spent["n2" if workers else "n0"].append(where)
                    print(_line(name, workers, elapsed, where), flush=True)
            floors = [w["floor_s"] for runs in spent.values() for w in runs]
            floor = max(floors) if floors else 0.0
            ratio = round(median_ratio(parallel, serial), 3) if serial and parallel else None
            # The rest: every scenario's own time, budget waits left out (from the -n 0 runs).
            rest = min(
                (sum(v["working_s"] for v in w["workers"].values()) for w in spent["n0"]),
                default=0.0,
            )
            # Two workers cannot finish before the waits end, nor before the waits and the rest
            # shared between them: pytest-xdist's start and end come on top.
            bound = max(floor, (floor + rest) / 2)
            facts: dict[str, Any] = {
                "counted_failed_logins": sorted(
                    {w["counted_failed_logins"] for runs in spent.values() for w in runs}
                ),
                "seconds": floor,
                "rest_s": round(rest, 2),
                "n2_lower_bound_s": round(bound, 2),
                "n2_over_floor": round(min(parallel) / floor, 3) if floor and parallel else None,
                "n2_minus_floor_s": round(min(parallel) - floor, 2) if parallel else None,
                "n2_minus_lower_bound_s": round(min(parallel) - bound, 2) if parallel else None,
                # The best ratio any schedule could reach against this -n 0 time.
                "best_possible_ratio": round(bound / min(serial), 3) if serial else None,
            }
            found[f"budget_{name}_seconds"] = {"n0": serial, "n2": parallel}
            found[f"budget_{name}_ratio_n2_over_n0"] = {"value": ratio, "goal": "<= 0.75"}
            found[f"budget_{name}_floor"] = facts
            found[f"budget_{name}_timeline"] = spent
            print(
                f"{name}: -n 0 {min(serial, default=0):.1f} s, -n 2 "
                f"{min(parallel, default=0):.1f} s, ratio {ratio} (goal <= 0.75); floor "
                f"{floor:g} s for {facts['counted_failed_logins']} counted failed logins at "
                f"{BUDGET_THRESHOLD - 1} per {BUDGET_COOLDOWN:g} s; -n 2 = floor + "
                f"{facts['n2_minus_floor_s']} s; rest {facts['rest_s']} s, so -n 2 >= "
                f"max(floor, (floor + rest) / 2) = {facts['n2_lower_bound_s']} s: -n 2 = that "
                f"+ {facts['n2_minus_lower_bound_s']} s; best possible ratio "
                f"{facts['best_possible_ratio']}",
                flush=True,
            )
    return found


def _line(name: str, workers: str | None, elapsed: float, where: dict[str, Any]) -> str:
    lanes = "; ".join(
        f"{w}: {v['tests']} tests {v['first_start_s']}-{v['last_end_s']} s, "
        f"{v['budget_waits']} waits {v['budget_wait_s']} s, working {v['working_s']} s, "
        f"idle between tests {v['idle_between_tests_s']} s"
        for w, v in where["workers"].items()
    )
    return (
        f"{name} -n {workers or 0}: {elapsed:.1f} s; {where['counted_failed_logins']} counted "
        f"failed logins -> {where['forced_waits']} forced waits, floor {where['floor_s']:g} s; "
        f"counted at {where['counted_at_s']}; {lanes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30, help="scenario runs per round")
    parser.add_argument("--catalogue-rounds", type=int, default=2)
    parser.add_argument("--budget-rounds", type=int, default=1)
    parser.add_argument(
        "--only-budget", action="store_true", help="only the 5-failure / 20 s target measure"
    )
    parser.add_argument(
        "--budget-places",
        default=",".join(PLACES),
        help=f"where the 5-failure / 20 s target is, of {', '.join(PLACES)} (default: both)",
    )
    args = parser.parse_args()
    places = tuple(p for p in args.budget_places.split(",") if p)
    if not set(places) <= set(PLACES):
        parser.error(f"--budget-places: one or more of {', '.join(PLACES)}")
    if args.only_budget:
        write("engine-budget", budget_rounds(args.budget_rounds, places))
        return
    engine_times: list[float] = []
    bare_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANYPOST_CONFORMANCE_STATE"] = str(Path(tmp) / "state")
        target = BundledTarget(Path(tmp) / "bundled", relay=False)
        profile_path = target.start()
        try:
            os.environ.update(target.env)
            profile = load_profile(profile_path)
            port = profile.ports["submission"]
            ca = str(profile.tls.ca_file)
            key = target.env["ANYPOST_KEY_SEND_ONLY"]
            loaded = load(profile_path)
            for round_ in range(args.rounds):
                first = "engine" if round_ % 2 == 0 else "bare"
                pair = asyncio.run(paired_round(*loaded, port, ca, key, args.runs, first))
                engine_times.append(pair[0])
                bare_times.append(pair[1])
        finally:
            target.stop()
        serial: list[float] = []
        parallel: list[float] = []
        for round_ in range(args.catalogue_rounds):
            for workers in (None, "2") if round_ % 2 == 0 else ("2", None):
                elapsed = catalogue(workers, Path(tmp) / f"report-{round_}-{workers}")
                (parallel if workers else serial).append(elapsed)
    write(
        "engine",
        {
            "scenario": SCENARIO,
            "runs_per_round": args.runs,
            "engine_seconds": engine_times,
            "bare_aiosmtplib_seconds": bare_times,
            "ratio_per_round": [
                round(e / b, 3) for e, b in zip(engine_times, bare_times, strict=True)
            ],
            "overhead_ratio_engine_over_bare": {
                "value": round(median_ratio(engine_times, bare_times), 3),
                "goal": "<= 1.2",
            },
            "catalogue_seconds": {"n0": serial, "n2": parallel},
            "catalogue_ratio_n2_over_n0": {
                "value": round(median_ratio(parallel, serial), 3),
                "goal": "< 1.0",
            },
            # --budget-rounds 0 leaves out the slow 5-failure / 20 s measure.
            **(budget_rounds(args.budget_rounds, places) if args.budget_rounds else {}),
        },
    )


if __name__ == "__main__":
    main()
