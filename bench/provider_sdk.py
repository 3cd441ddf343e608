"""Benchmark: one cloud TTS call, Oyez's clients against the providers' own SDKs.

Each pair talks to its simulated API on 127.0.0.1 (tests/fakes/): Amazon Polly, which checks
each request's SigV4 signature and answers raw PCM (``OutputFormat: pcm``), and Google Cloud
Text-to-Speech, which answers LINEAR16 (a WAV, base64 in JSON). Neither runs an encoder, so what
is left is each client's own cost: building, signing, sending and reading a call. The baselines
are the SDKs a Python user would pick: botocore's Polly client (what boto3 wraps) and
``google-cloud-texttospeech``'s ``TextToSpeechClient`` on its REST transport (its gRPC one
cannot reach an HTTP server), both with their defaults. Both are synchronous, so they run in a
thread pool the size of the concurrency, as an asyncio bot would run them. Oyez is
``PollyProvider.synthesize`` and ``GoogleProvider.synthesize``. The simulated server runs on the
event loop of the process that measures.

Two loads, each ``--rounds`` times, the clients interleaved (SDK, Oyez, Oyez, SDK, ...), warm (a
first call made before timing):

- ``one at a time``: ``--calls`` calls in sequence; median and p95 latency per call;
- ``8 at once``: ``--calls`` calls, 8 in flight; calls per second.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the
bench:provider-sdk markers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import botocore  # noqa: E402
import botocore.session  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.cloud import texttospeech  # noqa: E402

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.providers.base import Provider, SynthesisJob  # noqa: E402
from bot.speech import Voice  # noqa: E402
from integrations.google import GoogleProvider  # noqa: E402
from integrations.polly import PollyProvider  # noqa: E402
from tests.fakes import google as fake_google  # noqa: E402
from tests.fakes import polly as fake_polly  # noqa: E402

TEXT = "The washing machine has finished."
CONCURRENCY = 8
SDK_VERSIONS = {
    "polly": f"botocore {botocore.__version__} Polly client",
    "google": f"google-cloud-texttospeech {texttospeech.__version__} (REST)",
}


@dataclass
class Pair:
    """One provider's two clients: the SDK's call (blocking) and Oyez's."""

    name: str
    sdk_call: Callable[[], object]
    oyez: Provider
    job: SynthesisJob
    close_sdk: Callable[[], object]


@asynccontextmanager
async def polly_pair() -> AsyncIterator[Pair]:
    async with fake_polly.FakePolly(rate_limit_per_second=100_000) as fake:
        sdk: Any = botocore.session.get_session().create_client(
            "polly",
            region_name=fake_polly.DEFAULT_REGION,
            endpoint_url=fake.base_url,
            aws_access_key_id=fake_polly.DEFAULT_ACCESS_KEY_ID,
            aws_secret_access_key=fake_polly.DEFAULT_SECRET_ACCESS_KEY,
        )

        def call() -> object:
            answer = sdk.synthesize_speech(
                Text=TEXT, VoiceId="Joanna", OutputFormat="pcm", Engine="standard"
            )
            return answer["AudioStream"].read()

        section = {
            "access_key_id": fake_polly.DEFAULT_ACCESS_KEY_ID,
            "secret_access_key": fake_polly.DEFAULT_SECRET_ACCESS_KEY,
            "region": fake_polly.DEFAULT_REGION,
            "base_url": fake.base_url,
            "output_format": "pcm",
        }
        oyez = PollyProvider.from_settings(config.load(providers={"polly": section}))
        voice = Voice("polly", "standard", "Joanna", "Joanna", "en_US")
        try:
            yield Pair("polly", call, oyez, SynthesisJob("bench", TEXT, voice), sdk.close)
        finally:
            await oyez.aclose()


@asynccontextmanager
async def google_pair() -> AsyncIterator[Pair]:
    async with fake_google.FakeGoogleTTS(rate_limit_per_minute=10_000_000) as fake:
        options = ClientOptions(api_endpoint=fake.base_url, api_key=fake_google.DEFAULT_API_KEY)
        sdk: Any = texttospeech.TextToSpeechClient(transport="rest", client_options=options)
        voice_params = texttospeech.VoiceSelectionParams(
            language_code="en-US", name="en-US-Standard-C"
        )
        audio = texttospeech.AudioConfig(audio_encoding=texttospeech.AudioEncoding.LINEAR16)

        def call() -> object:
            answer = sdk.synthesize_speech(
                input=texttospeech.SynthesisInput(text=TEXT), voice=voice_params, audio_config=audio
            )
            return answer.audio_content

        section = {"api_key": fake_google.DEFAULT_API_KEY, "base_url": fake.base_url}
        oyez = GoogleProvider.from_settings(config.load(providers={"google": section}))
        voice = Voice("google", "Standard", "en-US-Standard-C", "en-US-Standard-C", "en_US")
        try:
            yield Pair(
                "google", call, oyez, SynthesisJob("bench", TEXT, voice), sdk.transport.close
            )
        finally:
            await oyez.aclose()


async def batch(
    pair: Pair, client: str, calls: int, parallel: int, pool: ThreadPoolExecutor
) -> list[float]:
    """The latency of each of ``calls`` calls, ``parallel`` at a time."""
    loop = asyncio.get_running_loop()

    def timed_sdk() -> float:
        started = time.perf_counter()
        pair.sdk_call()
        return time.perf_counter() - started

    async def timed_oyez() -> float:
        started = time.perf_counter()
        await pair.oyez.synthesize(pair.job)
        return time.perf_counter() - started

    times: list[float] = []
    for start in range(0, calls, parallel):
        count = min(parallel, calls - start)
        waits: list[Awaitable[float]] = (
            [loop.run_in_executor(pool, timed_sdk) for _ in range(count)]
            if client == "sdk"
            else [timed_oyez() for _ in range(count)]
        )
        times += await asyncio.gather(*waits)
    return times


Results = dict[str, dict[str, list[float]]]  # load -> client -> latencies (s) or rates (calls/s)


async def measure(pair: Pair, calls: int, rounds: int) -> Results:
    loads = ("one at a time", f"{CONCURRENCY} at once")
    results: Results = {load: {"sdk": [], "oyez": []} for load in loads}
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for client in ("sdk", "oyez"):  # warm
            await batch(pair, client, 1, 1, pool)
        for round_ in range(rounds):
            order = ("sdk", "oyez") if round_ % 2 == 0 else ("oyez", "sdk")
            for client in order:
                results[loads[0]][client] += await batch(pair, client, calls, 1, pool)
            for client in order:
                started = time.perf_counter()
                await batch(pair, client, calls, CONCURRENCY, pool)
                results[loads[1]][client].append(calls / (time.perf_counter() - started))
    pair.close_sdk()
    return results


async def measure_all(calls: int, rounds: int) -> dict[str, Results]:
    measured: dict[str, Results] = {}
    for make in (polly_pair, google_pair):
        async with make() as pair:
            measured[pair.name] = await measure(pair, calls, rounds)
    return measured


def table(measured: dict[str, Results], calls: int, rounds: int) -> str:
    lines = [
        f"{calls} calls per client, load and round, {rounds} rounds interleaved, warm; each "
        "simulated API on 127.0.0.1 in the same process (Polly checks every signature and "
        "answers raw PCM, Google answers a base64 WAV); 2 cores, nothing else running:",
        "",
        "| provider | client | one at a time: median (ms) | p95 (ms) | ratio | "
        f"{CONCURRENCY} at once: calls/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, results in measured.items():
        sequential, concurrent = results["one at a time"], results[f"{CONCURRENCY} at once"]
        sdk_median = statistics.median(sequential["sdk"])
        sdk_rate = statistics.median(concurrent["sdk"])
        for key, label in (("sdk", f"{SDK_VERSIONS[name]} (baseline)"), ("oyez", "Oyez")):
            median = statistics.median(sequential[key])
            p95 = statistics.quantiles(sequential[key], n=20)[-1]
            rate = statistics.median(concurrent[key])
            lines.append(
                f"| {name} | {label} | {median * 1000:.2f} | {p95 * 1000:.2f} "
                f"| {median / sdk_median:.2f}× | {rate:.0f} | {rate / sdk_rate:.2f}× |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    result = table(asyncio.run(measure_all(args.calls, args.rounds)), args.calls, args.rounds)
    print(result)
    if args.write_readme:
        write_readme("provider-sdk", result)


if __name__ == "__main__":
    main()
