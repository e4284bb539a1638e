"""``anypost-conformance``: run the catalogue, serve the reference server, check scenarios.

Exit codes: 0 every selected MUST scenario passed (with --strict, every SHOULD too); 1 some
failed; 2 a usage, profile or scenario error, or the target unreachable at start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import ConformanceError, ScenarioError, TargetError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
# pytest's exit codes: 0 ok, 1 tests failed, 2 interrupted (collection errors), 3 internal
# error, 4 usage error, 5 no tests collected.
PYTEST_EXIT = {
    0: EXIT_OK,
    1: EXIT_FAILED,
    2: EXIT_USAGE,
    3: EXIT_USAGE,
    4: EXIT_USAGE,
    5: EXIT_USAGE,
}


def default_scenarios() -> Path:
    local = Path("scenarios")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / "scenarios"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anypost-conformance", description="Conformance harness for Anypost SMTP submission."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run scenarios against a target (default: the bundled reference server)"
    )
    run.add_argument(
        "paths", nargs="*", type=Path, help="scenario files or folders (default: the catalogue)"
    )
    run.add_argument(
        "--target",
        type=Path,
        help="target profile; without it the bundled reference server is started",
    )
    run.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where reports go (default: reports/)",
    )
    run.add_argument(
        "--tag", action="append", default=[], help="only scenarios with this tag (repeatable)"
    )
    run.add_argument(
        "--requirement",
        action="append",
        default=[],
        help="only scenarios checking this requirement id (repeatable)",
    )
    run.add_argument(
        "-k",
        dest="keyword",
        help="pytest -k expression over scenario ids, tags and requirement ids",
    )
    run.add_argument("-n", dest="workers", help="parallel workers (pytest-xdist), e.g. 2 or auto")
    run.add_argument(
        "--include-destructive",
        action="store_true",
        help="also run scenarios that trip the auth-failure block",
    )
    run.add_argument(
        "--strict", action="store_true", help="SHOULD-level expectations fail the run too"
    )
    run.add_argument(
        "--allow-missing-keys",
        action="store_true",
        help="run although key variables of the profile are unset (what needs them is not "
        "verified; the summary says how much); without it, unset keys are a usage error",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="less pytest output")
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each scenario N times and report its stability",
    )
    run.epilog = (
        "Any other option goes to pytest as it is (-v, -x, --maxfail=2, ...); "
        "everything after -- too."
    )

    listing = sub.add_parser("list", help="list the catalogue's scenarios, tags or requirements")
    listing.add_argument(
        "what",
        nargs="*",
        metavar="[scenarios|tags|requirements] [PATH ...]",
        help="what to list (default: scenarios), then scenario files or folders",
    )
    listing.add_argument("--tag", action="append", default=[], help="only with this tag")
    listing.add_argument(
        "--requirement", action="append", default=[], help="only checking this requirement"
    )
    listing.add_argument("--area", action="append", default=[], help="only in this area")
    listing.add_argument("-k", dest="keyword", help="only ids or titles containing this text")

    serve = sub.add_parser("serve", help="run the reference server in the foreground")
    serve.add_argument("--config", type=Path, help="server configuration (default: the sample)")
    serve.add_argument("--ports", help="comma-separated ports overriding the configuration")
    serve.add_argument("--spool", type=Path, help="spool folder overriding the configuration")

    check = sub.add_parser("check-scenarios", help="validate scenario files")
    check.add_argument("paths", nargs="*", type=Path)
    return parser


def _version() -> str:
    from . import __version__

    return f"anypost-conformance {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Options we do not know go to pytest (-v, -x, --maxfail=2); after "--", everything does.
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1 :]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "list":  # paths after an option: `list requirements --tag x PATH`
        args.what += [u for u in unknown if not u.startswith("-")]
        unknown = [u for u in unknown if u.startswith("-")]
    if unknown and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.pytest_args = unknown + passthrough
    try:
        if args.command == "run":
            return run(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "list":
            return list_catalogue(args)
        return check_scenarios(args.paths or [default_scenarios()])
    except ConformanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_USAGE


def list_catalogue(args: argparse.Namespace) -> int:
    from . import listing

    what, paths = "scenarios", [Path(p) for p in args.what]
    if args.what and args.what[0] in ("scenarios", "tags", "requirements"):
        what, paths = args.what[0], paths[1:]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_USAGE
    paths = paths or [default_scenarios()]
    catalogue = listing.load_catalogue(paths)
    chosen = listing.select(
        catalogue.scenarios, args.tag, args.requirement, args.keyword, args.area
    )
    if what == "tags":
        lines = listing.tag_lines(chosen)
    elif what == "requirements":
        filtered = bool(args.tag or args.keyword or args.area)
        lines = listing.requirement_lines(
            chosen, catalogue.requirements, args.requirement, covered_only=filtered
        )
    else:
        lines = listing.scenario_lines(chosen)
    print("\n".join(lines) if lines else "nothing matches")
    return EXIT_OK


def check_scenarios(paths: list[Path]) -> int:
    from .loader import find_scenario_files, load_scenarios
    from .requirements import find_requirements, load_requirements

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_USAGE
    files = find_scenario_files(paths)
    if not files:
        print(
            f"error: no *.scenario.yaml files under {', '.join(map(str, paths))}", file=sys.stderr
        )
        return EXIT_USAGE
    errors = 0
    ids: dict[str, str] = {}
    count = 0
    for file in files:
        try:
            requirements = load_requirements(find_requirements(file.parent))
            for scenario in load_scenarios(file, requirements):
                count += 1
                if scenario.id in ids:
                    raise ScenarioError(
                        f"{scenario.location}: scenario id {scenario.id} is already used at {ids[scenario.id]}"
                    )
                ids[scenario.id] = str(scenario.location)
        except ScenarioError as exc:
            errors += 1
            print(str(exc), file=sys.stderr)
    if errors:
        print(f"{errors} of {len(files)} file(s) have errors", file=sys.stderr)
        return EXIT_USAGE
    print(f"{count} scenarios in {len(files)} file(s): all valid")
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "reference_server"]
    if args.config:
        command += ["--config", str(args.config)]
    if args.ports:
        command += ["--ports", args.ports]
    if args.spool:
        command += ["--spool", str(args.spool)]
    # Replace this process so SIGTERM reaches the server directly.
    os.execv(sys.executable, command)
    return EXIT_USAGE  # not reached


def _pytest_command(
    args: argparse.Namespace, profile: Path, report_dir: Path, ini: Path
) -> list[str]:
    command = _base_pytest_command(args, profile, report_dir, ini)
    # Our lines replace pytest's per-test output; -v still shows more (steps that failed).
    command += ["--conformance-console", "-o", "verbosity_test_cases=0"]
    if args.repeat > 1:
        command += ["--conformance-repeat", str(args.repeat)]
    return command + list(getattr(args, "pytest_args", []))


def _base_pytest_command(
    args: argparse.Namespace, profile: Path, report_dir: Path, ini: Path
) -> list[str]:
    paths = [str(p) for p in (args.paths or [default_scenarios()])]
    command = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-c",
        str(ini),
        "--rootdir",
        str(Path.cwd()),
        "-p",
        "no:cacheprovider",
        "--target",
        str(profile),
        "--junitxml",
        str(report_dir / "junit.xml"),
        "--alluredir",
        str(report_dir / "allure-results"),
        "--clean-alluredir",
        "--conformance-report-dir",
        str(report_dir),
        "-rfEsx",
    ]
    for tag in args.tag:
        command += ["--conformance-tag", tag]
    for requirement in args.requirement:
        command += ["--conformance-requirement", requirement]
    if args.keyword:
        command += ["-k", args.keyword]
    if args.workers:
        # Lanes (conformance.schedule): the scenarios spending the auth-failure budget in one
        # that starts first, destructive ones in one that comes last; in collection order.
        command += ["-n", str(args.workers), "--conformance-lanes", "--no-loadscope-reorder"]
    if args.include_destructive:
        command.append("--include-destructive")
    if args.strict:
        command.append("--conformance-strict")
    if args.allow_missing_keys:
        command.append("--allow-missing-keys")
    if args.quiet:
        command.append("-q")
    return command


def run(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not path.exists():
            print(f"error: no such file or folder: {path}", file=sys.stderr)
            return EXIT_USAGE
    report_dir: Path = args.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "pytest.ini").unlink(missing_ok=True)  # left by earlier versions
    with tempfile.TemporaryDirectory(prefix="anypost-run-") as workdir:
        ini = Path(workdir) / "pytest.ini"
        # The harness's own pytest settings, whatever the caller's project configures.
        ini.write_text("[pytest]\njunit_family = xunit2\n")
        return _run_in(args, report_dir, ini, Path(workdir))


def _run_in(args: argparse.Namespace, report_dir: Path, ini: Path, workdir: Path) -> int:
    from .bundled import BundledTarget

    env = dict(os.environ)
    if args.target is not None:
        if not args.target.is_file():
            print(f"error: no such profile: {args.target}", file=sys.stderr)
            return EXIT_USAGE
        return _run_pytest(_pytest_command(args, args.target, report_dir, ini), env)
    # The bundled reference server, its log in the report folder.
    target = BundledTarget(workdir / "bundled", log=report_dir / "reference-server.log")
    try:
        profile = target.start()
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        kept = report_dir / "bundled-profile.yaml"
        kept.write_text(profile.read_text())
        print(
            f"bundled reference server on 127.0.0.1 ports {target.profile_ports()}; "
            f"profile: {kept}",
            flush=True,
        )
        env.update(target.env)
        return _run_pytest(_pytest_command(args, profile, report_dir, ini), env)
    finally:
        target.stop()


def _run_pytest(command: list[str], env: dict[str, str]) -> int:
    """Run pytest in its own process group, so a Ctrl-C (or SIGTERM to us) reaches it once, as
    SIGINT, and it can end its sessions with QUIT and write every report before it exits; the
    bundled server, in a group of its own, keeps serving until then. Exit 130 when interrupted."""
    import signal

    child = subprocess.Popen(command, env=env, process_group=0)
    interrupted: list[float] = []

    def forward(signum: int, frame: object) -> None:
        interrupted.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if interrupted and time.monotonic() - interrupted[0] > INTERRUPT_GRACE:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        return EXIT_INTERRUPTED
    return PYTEST_EXIT.get(code, EXIT_USAGE)


INTERRUPT_GRACE = 60.0  # seconds pytest gets to close sessions and write reports
