"""A server that conforms to nothing: plain aiosmtpd, no TLS, no authentication, accepts all.

The catalogue must fail it loudly and cleanly: every STARTTLS and AUTH requirement failed, no
harness error, no hang, and no real key ever sent (it never offers TLS). To show the last,
the server writes every byte it receives to a file the tests search for the keys.

    python -m interop.plain run [anypost-conformance run options]   # the catalogue against it
    python -m interop.plain serve --record FILE                     # the server alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

from conformance.bundled import stop_process

PORT_NAMES = ("submission", "alternate", "smtp")
KEY_ENV = {
    "send_only": "PLAIN_TARGET_KEY_SEND_ONLY",
    "full_access": "PLAIN_TARGET_KEY_FULL_ACCESS",
    "restricted": "PLAIN_TARGET_KEY_RESTRICTED",
    "no_send": "PLAIN_TARGET_KEY_NO_SEND",
}


class RecordingSMTP(SMTP):
    """aiosmtpd's own protocol, unchanged, that also keeps every byte it was sent."""

    record: Path

    def data_received(self, data: bytes) -> None:
        with open(self.record, "ab") as fh:
            fh.write(data)
        super().data_received(data)


async def _serve(record: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    handler = Sink()

    def factory() -> SMTP:
        # No tls_context, no authenticator: aiosmtpd offers neither STARTTLS nor AUTH.
        smtp = RecordingSMTP(handler, hostname="plain-aiosmtpd.test", timeout=60)
        smtp.record = record
        return smtp

    servers = [await loop.create_server(factory, "127.0.0.1", 0) for _ in PORT_NAMES]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"event": "listening", "ports": ports}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()
        await server.wait_closed()


def profile(ports: list[int]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "plain aiosmtpd (no TLS, no auth)",
        "target": {
            "host": "127.0.0.1",
            "ports": dict(zip(PORT_NAMES, ports, strict=True)),
            "tls": {"system": True},
            "timeout": 10,
            "scenario_deadline": 60,
        },
        "keys": {
            **{role: {"env": env} for role, env in KEY_ENV.items()},
            "restricted": {"env": KEY_ENV["restricted"], "allowed_domains": ["acme.test"]},
            "invalid": {"value": "ap_conformance_not_a_real_key_0000"},
        },
        "domains": {
            "verified": "acme.test",
            "outside_allowed": "billing.acme.test",
            "unverified": "unverified.test",
        },
        "recipients": [f"rcpt{i}@sink.test" for i in range(20)],
        "limits": {
            "message_size": 5 * 1024 * 1024,
            "max_recipients": 100,
            "auth_failure_threshold": 5,
            "auth_failure_cooldown": 3,
        },
        "budget": {"messages": 1000},
        "observer": {"kind": "none"},
    }


class PlainTarget:
    """The plain server as a child process, its recording, and a profile for it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.record = workdir / "received.bin"
        self.profile_path = workdir / "plain-profile.yaml"
        self.env = {env: "ap_" + secrets.token_urlsafe(24) for env in KEY_ENV.values()}
        self.ports: list[int] = []
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "interop.plain", "serve", "--record", str(self.record)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            line = self._first_line(timeout)
            self.ports = [int(p) for p in json.loads(line)["ports"]]
        except BaseException:
            self.stop()
            raise
        self.profile_path.write_text(yaml.safe_dump(profile(self.ports), sort_keys=False))
        return self.profile_path

    def _first_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if selector.select(timeout=0.2):
                    return self._proc.stdout.readline()
                if self._proc.poll() is not None:
                    break
        raise RuntimeError(f"the plain aiosmtpd server did not start within {timeout:g}s")

    def received(self) -> bytes:
        return self.record.read_bytes() if self.record.is_file() else b""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> PlainTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.plain", description=__doc__)
    parser.add_argument("command", choices=["run", "serve"])
    parser.add_argument("--record", type=Path, help="serve: file to append received bytes to")
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        record = args.record or Path(os.devnull)
        asyncio.run(_serve(record))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="anypost-plain-"))
    try:
        with PlainTarget(workdir) as target:
            print(f"plain aiosmtpd on 127.0.0.1 ports {target.ports}", flush=True)
            command = [
                sys.executable,
                "-m",
                "conformance",
                "run",
                "--target",
                str(target.profile_path),
                *rest,
            ]
            env = {**os.environ, **target.env}
            return subprocess.run(command, env=env, check=False).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_cli())
