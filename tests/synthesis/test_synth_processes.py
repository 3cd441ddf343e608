"""``oyez run --role synth`` processes making another process's speech, through a real Redis:
real Piper heard by the recogniser; and a synth worker SIGKILLed with 100 requests queued
(the simulated Segmind's v2 queue as the paid provider): every request ends spoken or reported
failed, none is lost, at most the worker's concurrency are made twice, and no job is paid for
twice (the survivor resumes the dead worker's recorded Segmind job)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.ops import config
from bot.ops.config import EngineSettings, Settings
from bot.ops.engine import Engine
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.remote import GROUP, RemoteSynthesis, SynthQueue
from tests.fakes.segmind import DEFAULT_API_KEY, MODELS, FakeSegmind
from tests.support.asr import Transcriber, word_error_rate
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

MODEL = "openvoice"  # a Segmind model with a v2 (queued) API
CONCURRENCY = 4
REQUESTS = 100
#: Seconds since the last submit to Segmind before the worker is killed (see busy_worker).
QUIET_S = 0.15
OPEN_LIMITS = {"providers": {"segmind": {"requests_per_minute": 100000, "max_concurrent": 64}}}


def sections(tmp_path: Path, url: str, fake: FakeSegmind | None) -> dict[str, Any]:
    """What every process of a test is configured with (one data volume, one engine)."""
    found: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "engine": {"url": url},
        "http": {"host": "127.0.0.1", "port": 0},
        "synth": {"concurrency": CONCURRENCY, "claim_idle_s": 2.0, "timeout_s": 120},
    }
    if fake is not None:
        segmind: dict[str, Any] = {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}
        segmind["default_model"] = MODEL
        segmind["poll"] = {"first_s": 0.1, "max_s": 0.2}
        found |= {"providers": {"segmind": segmind}, "rate_limits": OPEN_LIMITS}
    return found


class SynthProcess:
    """``python -m bot --config <file> run --role synth``, its stderr kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = b""

    @classmethod
    async def start(cls, config_file: Path) -> SynthProcess:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "--config", str(config_file), "run"),
            *("--role", "synth"),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def end(self, how: signal.Signals = signal.SIGTERM) -> str:
        if self.process.returncode is None:
            self.process.send_signal(how)
        assert self.process.stderr is not None
        self.stderr += await asyncio.wait_for(self.process.stderr.read(), timeout=30)
        await self.process.wait()
        return self.stderr.decode(errors="replace")


@pytest.fixture
async def queue(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[SynthQueue]:
    async with await Engine.open(EngineSettings(url=redis_url)) as engine:
        made = engine.synth_queue()
        assert made is not None
        yield made


async def consumers(queue: SynthQueue, count: int) -> list[dict[str, Any]]:
    """The group's consumers once ``count`` synth workers read the stream."""
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(Exception):  # no stream or group yet
                found: list[dict[str, Any]] = await queue.client.xinfo_consumers(queue.jobs, GROUP)
                if len(found) >= count:
                    return found
            await asyncio.sleep(0.1)


def asker(settings: Settings, queue: SynthQueue) -> SpeechPipeline:
    pipeline = SpeechPipeline(settings)
    pipeline.remote = RemoteSynthesis(queue, settings.synth)
    return pipeline


async def test_a_synth_process_speaks_for_another_heard(
    tmp_path: Path,
    queue: SynthQueue,
    redis_url: str,  # noqa: F811 - the fixture imported above
    transcriber: Transcriber,
) -> None:
    found = sections(tmp_path, redis_url, None)
    config_file = tmp_path / "oyez.yaml"
    config_file.write_text(yaml.safe_dump(found))
    worker = await SynthProcess.start(config_file)
    settings = config.load(**found | {"synth": {**found["synth"], "mode": "workers"}})
    pipeline = asker(settings, queue)
    text = "The front door is open. Please close it."
    try:
        await consumers(queue, 1)
        parts = [s.speech async for s in pipeline.speak_sentences(SpeechRequest(text=text))]
    finally:
        await pipeline.aclose()
        log = await worker.end()
    assert len(parts) == 2 and all(isinstance(p, Utterance) for p in parts), log[-2000:]
    audio = [p.audio for p in parts if isinstance(p, Utterance)]
    heard = " ".join(transcriber.transcribe(a) for a in audio)
    assert word_error_rate(text, heard) <= 0.2, heard


async def test_a_worker_killed_with_100_requests_queued_loses_none_and_pays_once(
    tmp_path: Path,
    queue: SynthQueue,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    async with FakeSegmind(v2_queued_polls=4) as fake:
        found = sections(tmp_path, redis_url, fake)
        config_file = tmp_path / "oyez.yaml"
        config_file.write_text(yaml.safe_dump(found))
        workers = [await SynthProcess.start(config_file) for _ in range(2)]
        settings = config.load(**found | {"synth": {**found["synth"], "mode": "workers"}})
        pipeline = asker(settings, queue)
        outcomes: list[str] = []

        async def one(i: int) -> None:
            request = SpeechRequest(text=f"Request {i}.", provider="segmind", fallback=False)
            try:
                await pipeline.speak(request)
            except Exception as exc:
                outcomes.append(f"failed: {type(exc).__name__}: {exc}")
            else:
                outcomes.append("spoken")

        try:
            await consumers(queue, 2)
            asking = asyncio.gather(*(one(i) for i in range(REQUESTS)))
            victim = await busy_worker(queue, fake, workers)
            await victim.end(signal.SIGKILL)
            async with asyncio.timeout(180):
                await asking
        finally:
            await pipeline.aclose()
            logs = [await w.end() for w in workers]
    survivor = next(log for w, log in zip(workers, logs, strict=True) if w is not victim)
    taken = sum(int(n) for n in re.findall(r"took over (\d+) jobs", survivor))
    assert len(outcomes) == REQUESTS  # none lost
    assert outcomes == ["spoken"] * REQUESTS, [o for o in outcomes if o != "spoken"][:5]
    assert 1 <= taken <= CONCURRENCY, survivor[-3000:]  # the only ones made twice
    assert "resuming job" in survivor  # a paid job the dead worker submitted, polled again
    assert len(fake.requests_to(f"/v2/{MODEL}")) == REQUESTS  # each submitted once
    assert fake.billed_calls == REQUESTS  # never a second paid call
    async with await Engine.open(EngineSettings(url=redis_url)) as engine:
        spent = await engine.books(tmp_path).spent_today(provider="segmind")
    assert spent == pytest.approx(REQUESTS * MODELS[MODEL].cost)  # the shared ledger: once each


async def busy_worker(
    queue: SynthQueue, fake: FakeSegmind, workers: list[SynthProcess]
) -> SynthProcess:
    """The worker process making jobs once a fifth of them were submitted (its pid is in its
    consumer name), at a moment when no submit is under way: killed in the milliseconds
    between Segmind accepting a job and the job's record, a worker has the job paid for again
    (Segmind v2 takes no idempotency key), as the README says."""
    async with asyncio.timeout(60):
        while True:
            submits = fake.requests_to(f"/v2/{MODEL}")
            quiet = submits and time.time() - submits[-1].time > QUIET_S
            if len(fake.jobs) >= REQUESTS // 5 and quiet:
                for consumer in await queue.client.xinfo_consumers(queue.jobs, GROUP):
                    pid = int(str(consumer["name"]).split("-")[-2])
                    if consumer["pending"] > 0:
                        return next(w for w in workers if w.process.pid == pid)
            await asyncio.sleep(0.01)
