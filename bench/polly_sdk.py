"""Benchmark: one Amazon Polly call, Oyez's client against AWS's own (botocore's Polly client).

Both clients talk to the simulated Polly (tests/fakes/polly.py) on 127.0.0.1, which checks each
request's SigV4 signature and answers with raw PCM (``OutputFormat: pcm``, so that no encoder
runs in the server and the clients' own costs show). The baseline is botocore's Polly client
(what boto3 wraps: ``create_client("polly", endpoint_url=…)``, its defaults), synchronous, so
it runs in a thread pool the size of the concurrency, as an asyncio bot would run it. Oyez is
``PollyProvider.synthesize``. The server runs on the event loop of the process that measures.

Two loads, each ``--rounds`` times, the clients interleaved (SDK, Oyez, Oyez, SDK, …), both
warm (a first call made before timing):

- ``one at a time``: ``--calls`` calls in sequence; median and p95 latency per call;
- ``8 at once``: ``--calls`` calls, 8 in flight; calls per second.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the
bench:polly-sdk markers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import botocore.session  # noqa: E402

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.providers.base import SynthesisJob  # noqa: E402
from bot.speech import Voice  # noqa: E402
from integrations.polly import PollyProvider  # noqa: E402
from tests.fakes.polly import (  # noqa: E402
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_ACCESS_KEY,
    FakePolly,
)

TEXT = "The washing machine has finished."
CONCURRENCY = 8


def sdk_client(fake: FakePolly) -> Any:
    return botocore.session.get_session().create_client(
        "polly",
        region_name=DEFAULT_REGION,
        endpoint_url=fake.base_url,
        aws_access_key_id=DEFAULT_ACCESS_KEY_ID,
        aws_secret_access_key=DEFAULT_SECRET_ACCESS_KEY,
    )


def sdk_call(client: Any) -> float:
    started = time.perf_counter()
    answer = client.synthesize_speech(
        Text=TEXT, VoiceId="Joanna", OutputFormat="pcm", Engine="standard"
    )
    answer["AudioStream"].read()
    return time.perf_counter() - started


async def oyez_call(provider: PollyProvider, job: SynthesisJob) -> float:
    started = time.perf_counter()
    await provider.synthesize(job)
    return time.perf_counter() - started


class Clients:
    """Both clients, built once and warmed with one call each."""

    def __init__(self, fake: FakePolly) -> None:
        section = {
            "access_key_id": DEFAULT_ACCESS_KEY_ID,
            "secret_access_key": DEFAULT_SECRET_ACCESS_KEY,
            "region": DEFAULT_REGION,
            "base_url": fake.base_url,
            "output_format": "pcm",
        }
        self.oyez = PollyProvider.from_settings(config.load(providers={"polly": section}))
        voice = Voice("polly", "standard", "Joanna", "Joanna", "en_US")
        self.job = SynthesisJob("bench", TEXT, voice)
        self.sdk = sdk_client(fake)
        self.pool = ThreadPoolExecutor(CONCURRENCY)

    async def warm(self) -> None:
        await self.sdk_batch(1, 1)
        await self.oyez_batch(1, 1)

    async def sdk_batch(self, calls: int, parallel: int) -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []
        for start in range(0, calls, parallel):
            batch = [
                loop.run_in_executor(self.pool, sdk_call, self.sdk)
                for _ in range(min(parallel, calls - start))
            ]
            times += await asyncio.gather(*batch)
        return times

    async def oyez_batch(self, calls: int, parallel: int) -> list[float]:
        times: list[float] = []
        for start in range(0, calls, parallel):
            batch = [oyez_call(self.oyez, self.job) for _ in range(min(parallel, calls - start))]
            times += await asyncio.gather(*batch)
        return times

    async def aclose(self) -> None:
        await self.oyez.aclose()
        self.sdk.close()
        self.pool.shutdown()


async def measure(calls: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per load and client: the latencies (one at a time) or batch rates (8 at once)."""
    results: dict[str, dict[str, list[float]]] = {
        "one at a time": {"sdk": [], "oyez": []},
        f"{CONCURRENCY} at once": {"sdk": [], "oyez": []},
    }
    async with FakePolly(rate_limit_per_second=100_000) as fake:
        clients = Clients(fake)
        try:
            await clients.warm()
            for round_ in range(rounds):
                order = ("sdk", "oyez") if round_ % 2 == 0 else ("oyez", "sdk")
                for name in order:
                    batch = clients.sdk_batch if name == "sdk" else clients.oyez_batch
                    results["one at a time"][name] += await batch(calls, 1)
                for name in order:
                    batch = clients.sdk_batch if name == "sdk" else clients.oyez_batch
                    started = time.perf_counter()
                    await batch(calls, CONCURRENCY)
                    rate = calls / (time.perf_counter() - started)
                    results[f"{CONCURRENCY} at once"][name].append(rate)
        finally:
            await clients.aclose()
    return results


def table(results: dict[str, dict[str, list[float]]], calls: int, rounds: int) -> str:
    import botocore

    sequential = results["one at a time"]
    concurrent = results[f"{CONCURRENCY} at once"]
    sdk_median = statistics.median(sequential["sdk"])
    sdk_rate = statistics.median(concurrent["sdk"])
    lines = [
        f"{calls} calls per client, load and round, {rounds} rounds interleaved, warm; the "
        "simulated Polly on 127.0.0.1 in the same process (it checks every signature and "
        "answers raw PCM); 2 cores, nothing else running:",
        "",
        "| client | one at a time: median (ms) | p95 (ms) | ratio | "
        f"{CONCURRENCY} at once: calls/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = (("sdk", f"botocore {botocore.__version__} Polly client (baseline)"), ("oyez", "Oyez"))
    for key, label in names:
        median = statistics.median(sequential[key])
        p95 = statistics.quantiles(sequential[key], n=20)[-1]
        rate = statistics.median(concurrent[key])
        lines.append(
            f"| {label} | {median * 1000:.2f} | {p95 * 1000:.2f} | {median / sdk_median:.2f}× "
            f"| {rate:.0f} | {rate / sdk_rate:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    result = table(asyncio.run(measure(args.calls, args.rounds)), args.calls, args.rounds)
    print(result)
    if args.write_readme:
        write_readme("polly-sdk", result)


if __name__ == "__main__":
    main()
