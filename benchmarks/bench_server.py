"""The reference server against plain aiosmtpd, in one run, as ratios.

1. Submissions per second over the full exchange (connect, EHLO, STARTTLS, EHLO, AUTH, MAIL,
   RCPT, DATA of 1 KB, QUIT) with 1 and 20 concurrent clients. Goal: at least 0.8x.
2. Peak RSS of the server process under 20 concurrent 5 MB submissions. Goal: at most 1.1x.

Rounds alternate between the two servers so that machine noise falls on both alike.
Run: python -m benchmarks.bench_server [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from .common import ServerProcess, median_ratio, message, submit, write

KINDS = ("reference", "plain")


async def throughput(port: int, ca: str, clients: int, per_client: int) -> float:
    data = message(1024)

    async def one_client() -> None:
        for _ in range(per_client):
            await submit(port, ca, data)

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return clients * per_client / (time.perf_counter() - started)


async def big_load(port: int, ca: str, clients: int) -> None:
    data = message(5 * 1024 * 1024 - 1024)
    await asyncio.gather(*(submit(port, ca, data) for _ in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--messages", type=int, default=40, help="messages per round and concurrency"
    )
    args = parser.parse_args()
    rates: dict[str, dict[int, list[float]]] = {k: {1: [], 20: []} for k in KINDS}
    rss: dict[str, list[float]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for kind in KINDS if round_ % 2 == 0 else reversed(KINDS):
                server = ServerProcess(kind, Path(tmp) / f"{kind}-{round_}")
                try:
                    for clients in (1, 20):
                        per_client = max(1, args.messages // clients)
                        rates[kind][clients].append(
                            asyncio.run(throughput(server.port, server.ca, clients, per_client))
                        )
                finally:
                    server.stop()
                server = ServerProcess(kind, Path(tmp) / f"{kind}-{round_}-big")
                try:
                    asyncio.run(big_load(server.port, server.ca, 20))
                    rss[kind].append(server.peak_rss_mib())
                finally:
                    server.stop()
    write(
        "server",
        {
            "submissions_per_second": {k: {str(c): v for c, v in rates[k].items()} for k in KINDS},
            "throughput_ratio_reference_over_plain": {
                "1_client": round(median_ratio(rates["reference"][1], rates["plain"][1]), 3),
                "20_clients": round(median_ratio(rates["reference"][20], rates["plain"][20]), 3),
                "goal": ">= 0.8",
            },
            "peak_rss_mib_20x5mb": {k: v for k, v in rss.items()},
            "rss_ratio_reference_over_plain": {
                "value": round(median_ratio(rss["reference"], rss["plain"]), 3),
                "goal": "<= 1.1",
            },
        },
    )


if __name__ == "__main__":
    main()
