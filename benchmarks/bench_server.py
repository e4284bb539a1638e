"""The reference server against plain aiosmtpd, in one run, as ratios.

1. Submissions per second over the full exchange (connect, EHLO, STARTTLS, EHLO, AUTH, MAIL,
   RCPT, DATA of 1 KB, QUIT) with 1 and 20 concurrent clients. Goal: at least 0.8x.
2. Peak RSS of the server process under 20 concurrent 5 MB submissions. Goal: at most 1.1x.

The throughput rounds also measure plain aiosmtpd syncing each message before its 250 (one
write and one fdatasync in a thread, ``plain_aiosmtpd.py --fsync``): the floor of what a
durable 250 costs on this machine. Its ratio to plain aiosmtpd says how much of the goal's
20 % the sync alone takes; the reference server's ratio to it, how close the store is to
that floor.

All servers run at once and each throughput round measures a burst on each, in rotating
order; a figure is the median of the per-round ratios, so machine noise falls on every server
of a round alike. Run: python -m benchmarks.bench_server [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from .common import ServerProcess, median_ratio, message, submit, write

KINDS = ("reference", "plain", "plain-fsync")
RSS_KINDS = ("reference", "plain")


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


Ratios = dict[str, dict[int, list[float]]]
PAIRS = {
    "reference_over_plain": ("reference", "plain"),
    "plain_fsync_over_plain": ("plain-fsync", "plain"),
    "reference_over_plain_fsync": ("reference", "plain-fsync"),
}


def paired_throughput(
    rounds: int, messages: int, folder: Path
) -> tuple[dict[str, dict[int, list[float]]], Ratios]:
    """All servers up at once; each round measures one burst on each, in rotating order, so a
    change in the machine's load falls on every server of a round. Ratios are taken per round,
    then the median over rounds: robust to a noisy neighbour that a ratio of medians over
    rounds minutes apart is not."""
    rates: dict[str, dict[int, list[float]]] = {k: {1: [], 20: []} for k in KINDS}
    ratios: Ratios = {pair: {1: [], 20: []} for pair in PAIRS}
    servers = {kind: ServerProcess(kind, folder / kind) for kind in KINDS}
    try:
        for server in servers.values():  # warm up: imports, first handshake, first store
            asyncio.run(throughput(server.port, server.ca, 1, 3))
        for round_ in range(rounds):
            shift = round_ % len(KINDS)
            order = KINDS[shift:] + KINDS[:shift]
            for clients in (1, 20):
                per_client = max(1, messages // clients)
                got = {
                    kind: asyncio.run(
                        throughput(servers[kind].port, servers[kind].ca, clients, per_client)
                    )
                    for kind in order
                }
                for kind, rate in got.items():
                    rates[kind][clients].append(rate)
                for pair, (top, bottom) in PAIRS.items():
                    ratios[pair][clients].append(got[top] / got[bottom])
    finally:
        for server in servers.values():
            server.stop()
    return rates, ratios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9, help="paired throughput rounds")
    parser.add_argument("--rss-rounds", type=int, default=3)
    parser.add_argument(
        "--messages", type=int, default=40, help="messages per round and concurrency"
    )
    args = parser.parse_args()
    rss: dict[str, list[float]] = {k: [] for k in RSS_KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        rates, ratios = paired_throughput(args.rounds, args.messages, Path(tmp) / "throughput")
        for round_ in range(args.rss_rounds):
            for kind in RSS_KINDS if round_ % 2 == 0 else reversed(RSS_KINDS):
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
            **{
                f"throughput_ratio_{pair}": {
                    "1_client": round(statistics.median(by_clients[1]), 3),
                    "20_clients": round(statistics.median(by_clients[20]), 3),
                    "per_round": {str(c): [round(r, 3) for r in v] for c, v in by_clients.items()},
                    **({"goal": ">= 0.8"} if pair == "reference_over_plain" else {}),
                }
                for pair, by_clients in ratios.items()
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
