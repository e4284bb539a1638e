"""Shared pieces of the benchmarks: servers in their own processes, a client, the results file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

RESULTS = Path(__file__).with_name("results")
KEY = "ap_benchmark_key_0123456789"
ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """The reference server, plain aiosmtpd, or plain aiosmtpd that syncs each message
    (``plain-fsync``), in a process of its own so its CPU and memory are its own and can be read
    from /proc."""

    def __init__(self, kind: str, folder: Path, message_size: int = 5 * 1024 * 1024) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "reference":
            config = {
                "hostname": "localhost",
                "listen": {"host": "127.0.0.1", "ports": [0]},
                "tls": {"ca_out": str(folder / "ca.pem")},
                "spool": str(folder / "spool"),
                "limits": {"message_size": message_size, "auth_failure_threshold": 1000},
                "teams": [
                    {
                        "name": "bench",
                        "verified_domains": ["acme.test"],
                        "keys": [
                            {"id": "k", "secret_sha256": hashlib.sha256(KEY.encode()).hexdigest()}
                        ],
                    }
                ],
            }
            (folder / "server.yaml").write_text(yaml.safe_dump(config))
            command = [
                sys.executable,
                "-m",
                "reference_server",
                "--config",
                str(folder / "server.yaml"),
            ]
        else:
            command = [
                sys.executable,
                str(Path(__file__).with_name("plain_aiosmtpd.py")),
                str(folder),
                *(["--fsync"] if kind == "plain-fsync" else []),
            ]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.port = int(info["ports"][0])
        self.ca = str(info["ca"])

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def message(size: int) -> bytes:
    head = b"From: Bench <bench@acme.test>\r\nTo: r@sink.test\r\nSubject: bench\r\n\r\n"
    line = b"y" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"z" * max(0, size - len(head) - len(body) - 2) + b"\r\n"


async def submit(port: int, ca: str, data: bytes) -> None:
    """The full exchange: connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA, QUIT."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
        timeout=60,
        tls_context=ssl.create_default_context(cafile=ca),
        local_hostname="bench.test",
    )
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls()
    await smtp.ehlo()
    blob = base64.b64encode(f"\0anypost\0{KEY}".encode())
    reply = await smtp.execute_command(b"AUTH", b"PLAIN", blob)
    assert reply.code == 235, reply
    await smtp.sendmail("bench@acme.test", ["r@sink.test"], data)
    await smtp.quit()


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def write(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    figures = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **figures,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return path
