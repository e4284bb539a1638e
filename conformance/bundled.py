"""The bundled target: the reference server started as a subprocess on free loopback ports,
with freshly made keys, and a profile describing it.

``conformance`` never imports ``reference_server``: it runs it as ``python -m reference_server``,
the way any other target would be run.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .errors import TargetError

KEY_ENV = {
    "send_only": "ANYPOST_KEY_SEND_ONLY",
    "full_access": "ANYPOST_KEY_FULL_ACCESS",
    "restricted": "ANYPOST_KEY_RESTRICTED",
    "no_send": "ANYPOST_KEY_NO_SEND",
}
PORT_NAMES = ("submission", "alternate", "smtp")
RECIPIENTS = 120
# Short enough that the block scenario and the scenarios waiting it out cost seconds, not minutes.
THRESHOLD = 10
COOLDOWN = 3.0
# Short enough that the slow-upload scenario (an upload longer than it) costs seconds; long
# enough for every wait of a session on a loaded machine (the cooldown, a TLS handshake).
IDLE_TIMEOUT = 8


def free_port() -> int:
    """A loopback port free now, for the sink the server must know before it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(
    workdir: Path, sink_port: int, threshold: int = THRESHOLD, cooldown: float = COOLDOWN
) -> dict[str, object]:
    return {
        "relay": {"host": "127.0.0.1", "port": sink_port},
        "hostname": "localhost",
        "listen": {"host": "127.0.0.1", "ports": [0, 0, 0]},
        "tls": {"ca_out": str(workdir / "ca.pem")},
        "spool": str(workdir / "spool"),
        "limits": {
            "message_size": 5 * 1024 * 1024,
            "max_recipients": 100,
            "auth_failure_threshold": threshold,
            "auth_failure_cooldown": cooldown,
            "idle_timeout": IDLE_TIMEOUT,
        },
        "teams": [
            {
                "name": "acme",
                "verified_domains": ["acme.test", "billing.acme.test"],
                "keys": [
                    {
                        "id": "send-only",
                        "secret_env": KEY_ENV["send_only"],
                        "permission": "send_only",
                    },
                    {
                        "id": "full",
                        "secret_env": KEY_ENV["full_access"],
                        "permission": "full_access",
                    },
                    {
                        "id": "restricted",
                        "secret_env": KEY_ENV["restricted"],
                        "permission": "send_only",
                        "allowed_domains": ["acme.test"],
                    },
                    {
                        "id": "read-only",
                        "secret_env": KEY_ENV["no_send"],
                        "permission": "read_only",
                    },
                ],
            },
            {"name": "other", "verified_domains": ["other.test"], "keys": []},
        ],
    }


def profile(
    ports: list[int],
    ca: str,
    sink_port: int,
    threshold: int = THRESHOLD,
    cooldown: float = COOLDOWN,
) -> dict[str, object]:
    return {
        "schema_version": 1,
        "name": "bundled reference server",
        "target": {
            "host": "127.0.0.1",
            "ports": dict(zip(PORT_NAMES, ports, strict=True)),
            "tls": {"ca_file": ca, "server_name": "localhost"},
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
            "other_team": "other.test",
        },
        "recipients": [f"rcpt{i}@sink.test" for i in range(RECIPIENTS)],
        "recipient_pattern": "rcpt+{n}@sink.test",
        "limits": {
            "message_size": 5 * 1024 * 1024,
            "max_recipients": 100,
            "auth_failure_threshold": threshold,
            "auth_failure_cooldown": cooldown,
            "idle_timeout": IDLE_TIMEOUT,
        },
        "budget": {"messages": 2000},
        # The server relays every accepted message to the harness's capture sink, so the
        # delivered copies checked are the ones that left the server.
        "observer": {"kind": "sink", "port": sink_port},
        # The reference server's choices where the contract is silent (README).
        "policy": {"duplicate_recipients": "one_id", "missing_from": "refuse"},
    }


class BundledTarget:
    def __init__(
        self,
        workdir: Path,
        relay: bool = True,
        log: Path | None = None,
        threshold: int = THRESHOLD,
        cooldown: float = COOLDOWN,
    ) -> None:
        self.relay = relay
        self.threshold = threshold  # the auth-failure block (a benchmark sets a slower one)
        self.cooldown = cooldown
        self.log = log  # where the server's log goes (default: our stderr)
        self.workdir = workdir.resolve()
        self.env = {env: "ap_" + secrets.token_urlsafe(24) for env in KEY_ENV.values()}
        self.process: subprocess.Popen[str] | None = None
        self.profile_path = self.workdir / "bundled-profile.yaml"
        self.ports: list[int] = []

    def start(self, timeout: float = 30.0) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "bundled-server.yaml"
        sink_port = free_port()
        config = server_config(self.workdir, sink_port, self.threshold, self.cooldown)
        if not self.relay:
            # Nothing will listen on the sink port (a benchmark, say): do not relay at all.
            del config["relay"]
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, **self.env}
        log = open(self.log, "a", encoding="utf-8") if self.log else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reference_server", "--config", str(config_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                # Its own process group: a Ctrl-C at the terminal stops the run, which still
                # needs the server to end its sessions; stop() ends the server after.
                process_group=0,
            )
        finally:
            if log is not None:
                log.close()
        line = self._first_line(timeout)
        try:
            info = json.loads(line)
            ports = list(info["ports"])
            self.ports = ports
        except (ValueError, KeyError) as exc:
            self.stop()
            raise TargetError(f"the bundled server did not start: {line!r} ({exc})") from None
        self.profile_path.write_text(
            yaml.safe_dump(
                profile(ports, str(info["ca"]), sink_port, self.threshold, self.cooldown),
                sort_keys=False,
            )
        )
        return self.profile_path

    def profile_ports(self) -> str:
        return ", ".join(f"{n}={p}" for n, p in zip(PORT_NAMES, self.ports, strict=True))

    def _first_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    return self.process.stdout.readline()
                if self.process.poll() is not None:
                    break
        finally:
            selector.close()
        self.stop()
        raise TargetError(f"the bundled server printed nothing within {timeout:g}s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def __enter__(self) -> BundledTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM a server process (it stops cleanly on it), SIGKILL it if it lingers, and close
    the pipe its ready line came through."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stdout is not None:
        process.stdout.close()
