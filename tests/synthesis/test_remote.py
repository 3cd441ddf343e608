"""Synthesis in the synth workers (bot.synthesis.remote, bot.synthesis.workers), in one process
against a real Redis: an asking pipeline sends its cache misses, a worker pool with a pipeline
of its own (real Piper) makes them. Heard with the recogniser; the queue's takeover, claim
renewal, requeue on stop, expiry and the failures an asker reports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.audio.live import LiveUtterance
from bot.audio.ogg import opus_packets
from bot.errors import BudgetExceeded, InvalidRequest, RequestExpired
from bot.ops import config
from bot.ops.config import EngineSettings, Settings, SynthSettings, onnx_threads
from bot.ops.engine import Engine
from bot.ops.metrics import REGISTRY
from bot.speech import OutputProfile, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis import remote
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.remote import (
    GROUP,
    RemoteSynthesis,
    SynthQueue,
    WorkerFailed,
    WorkersUnavailable,
    decode_error,
    decode_utterance,
    encode_error,
    encode_job,
    encode_utterance,
)
from bot.synthesis.workers import SynthWorkers
from tests.support.asr import Transcriber, word_error_rate
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 - fixtures
from tests.support.timing import TimedTogether

TEXT = "The parcel is waiting at the front door."


def test_an_utterance_and_errors_cross_the_wire_unchanged() -> None:
    voice = Voice("piper", "joe", "joe", "Joe", "en_US")
    utterance = Utterance(
        "r1", "Hi.", b"\x00OggS\xff", OutputProfile.OGG_OPUS, 48000, 1, 1.5, voice,
        Timings(0.2, 0.01, 0.25, 0.1), -16.0, (), 0.01, False,
    )  # fmt: skip
    assert decode_utterance(encode_utterance(utterance)) == utterance
    again = decode_error(encode_error(BudgetExceeded("segmind", "the daily budget is spent")))
    assert isinstance(again, BudgetExceeded)
    assert (str(again), again.provider) == ("segmind: the daily budget is spent", "segmind")
    other = decode_error(encode_error(RuntimeError("boom")))
    assert isinstance(other, WorkerFailed)
    assert str(other) == "the synth worker failed: RuntimeError: boom"


def settings_for(tmp_path: Path, url: str, name: str, **synth: Any) -> Settings:
    providers = synth.pop("providers", {})
    return config.load(
        data_dir=tmp_path / name,
        engine={"url": url},
        synth={"claim_idle_s": 1.0, **synth},
        providers=providers,
    )


@dataclasses.dataclass
class Cluster:
    engine: Engine
    asker: SpeechPipeline
    queue: SynthQueue
    tmp_path: Path
    url: str
    workers: list[tuple[SynthWorkers, asyncio.Task[None]]] = dataclasses.field(default_factory=list)

    providers: dict[str, Any] = dataclasses.field(default_factory=dict)

    async def add_worker(self, **synth: Any) -> SynthWorkers:
        synth.setdefault("providers", self.providers)
        settings = settings_for(self.tmp_path, self.url, f"worker{len(self.workers)}", **synth)
        workers = SynthWorkers(SpeechPipeline(settings), self.queue, settings.synth)
        await workers.start()
        self.workers.append((workers, asyncio.create_task(workers.serve())))
        return workers

    async def stop_worker(self, workers: SynthWorkers) -> None:
        for pool, task in self.workers:
            if pool is workers:
                await stopped(pool, task)


async def stopped(pool: SynthWorkers, task: asyncio.Task[None]) -> None:
    """As ``oyez run`` stops a front end: its serving cancelled, then it is stopped."""
    task.cancel()
    await pool.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def cluster(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[Cluster]:
    engine = await Engine.open(EngineSettings(url=redis_url))
    queue = engine.synth_queue()
    assert queue is not None
    settings = settings_for(tmp_path, redis_url, "asker", mode="workers", timeout_s=60)
    asker = SpeechPipeline(settings)
    asker.remote = RemoteSynthesis(queue, settings.synth)
    made = Cluster(engine, asker, queue, tmp_path, redis_url)
    try:
        yield made
    finally:
        for pool, task in made.workers:
            await stopped(pool, task)
            await pool.pipeline.aclose()
        await asker.aclose()
        await engine.aclose()


async def test_a_miss_is_made_by_a_worker_and_heard(
    cluster: Cluster, transcriber: Transcriber
) -> None:
    workers = await cluster.add_worker()
    spoken = await cluster.asker.speak(SpeechRequest(text=TEXT, fallback=False))
    assert workers.made == 1
    assert spoken.voice.provider == "piper" and spoken.profile is OutputProfile.OGG_OPUS
    assert word_error_rate(TEXT, transcriber.transcribe(spoken.audio)) <= 0.2
    parts = [
        s.speech
        async for s in cluster.asker.speak_sentences(
            SpeechRequest(text="First it rains. Then the sun comes out.")
        )
    ]
    assert workers.made == 3 and len(parts) == 2  # one job a sentence
    assert all(isinstance(p, Utterance) for p in parts)
    await drained(cluster)  # acknowledged and deleted once answered


async def drained(cluster: Cluster) -> None:
    async with asyncio.timeout(10):
        while await cluster.queue.client.xlen(cluster.queue.jobs):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_bad_input_is_answered_by_the_asker_without_a_job(cluster: Cluster) -> None:
    await cluster.add_worker()
    with pytest.raises(InvalidRequest):
        await cluster.asker.speak(SpeechRequest(text="   "))
    with pytest.raises(InvalidRequest):
        await cluster.asker.speak(SpeechRequest(text="Hi.", voice="no-such-voice"))
    assert cluster.workers[0][0].made == 0


async def test_a_job_past_its_expiry_is_reported_never_left_waiting(cluster: Cluster) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    with pytest.raises(RequestExpired, match="waiting for a synth worker"):  # no worker at all
        await cluster.asker.speak(SpeechRequest(text=TEXT, expires_at=soon))
    assert await cluster.queue.client.xlen(cluster.queue.jobs) == 0  # withdrawn: nobody waits


async def test_a_worker_answers_a_job_past_its_deadline_unmade(cluster: Cluster) -> None:
    prepared = await cluster.asker.prepare(SpeechRequest(text=TEXT))
    fields = encode_job(prepared, "gone", time.time() - 1, live=False)
    await cluster.queue.client.xadd(cluster.queue.jobs, fields)
    workers = await cluster.add_worker()
    await drained(cluster)
    found: Any = await cluster.queue.client.xread({cluster.queue.replies("gone"): "0"})
    answer = found[0][1][0][1]
    assert (answer["kind"], answer["type"]) == ("error", "RequestExpired")
    assert "waiting in the synthesis queue" in answer["message"]
    assert workers.made == 0


async def test_no_worker_alive_fails_after_two_looks(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "LIVENESS_S", 0.2)
    with pytest.raises(WorkersUnavailable, match="no synth worker is alive"):
        await cluster.asker.speak(SpeechRequest(text=TEXT))
    assert await cluster.queue.client.xlen(cluster.queue.jobs) == 0  # withdrawn


async def test_auto_synthesizes_here_when_no_worker_is_alive(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.asker.remote is not None
    settings = settings_for(tmp_path, cluster.url, "auto", mode="auto")
    auto = RemoteSynthesis(cluster.queue, settings.synth)
    assert not await auto.use()
    workers = await cluster.add_worker()
    auto._alive = (float("-inf"), False)  # forget the last look
    assert await auto.use()
    await cluster.stop_worker(workers)


async def read_by_a_dead_worker(
    cluster: Cluster, consumer: str
) -> tuple[asyncio.Task[Utterance | LiveUtterance], str]:
    """A request sent, its job read by ``consumer``, a worker that then dies (it seemed alive
    when the job was sent): the asking task and the job's stream entry id."""
    client = cluster.queue.client
    await client.xgroup_create(cluster.queue.jobs, GROUP, id="0", mkstream=True)
    await client.set(cluster.queue.alive, consumer, px=60_000)
    speaking = asyncio.create_task(cluster.asker.speak(SpeechRequest(text=TEXT)))
    async with asyncio.timeout(10):
        taken: Any = None
        while not taken:
            taken = await client.xreadgroup(GROUP, consumer, {cluster.queue.jobs: ">"}, count=1)
    return speaking, str(taken[0][1][0][0])


async def test_the_jobs_of_a_dead_worker_are_taken_over(cluster: Cluster) -> None:
    speaking, _ = await read_by_a_dead_worker(cluster, "dead")
    before = taken_over()
    workers = await cluster.add_worker()  # claim_idle_s 1: takes it over within ~1.3 s
    async with asyncio.timeout(30):
        spoken = await speaking
    assert spoken.voice.provider == "piper" and workers.made == 1
    assert taken_over() == before + 1


def taken_over() -> float:
    labels = {"side": "worker", "outcome": "taken_over"}
    return REGISTRY.get_sample_value("oyez_synth_jobs_total", labels) or 0.0


async def test_a_live_worker_keeps_its_slow_job(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = await cluster.add_worker()
    real_speak = slow.pipeline.speak

    async def slowly(request: Any) -> Utterance:
        await asyncio.sleep(3.5)  # more than three times claim_idle_s
        return await real_speak(request)

    monkeypatch.setattr(slow.pipeline, "speak", slowly)
    speaking = asyncio.create_task(cluster.asker.speak(SpeechRequest(text=TEXT)))
    async with asyncio.timeout(5):
        while not slow.running:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    other = await cluster.add_worker()
    async with asyncio.timeout(30):
        await speaking
    assert (slow.made, other.made) == (1, 0)  # never taken over


async def test_a_job_under_way_when_its_worker_stops_goes_to_another(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopping = await cluster.add_worker(claim_idle_s=600)  # no takeover: only the requeue
    monkeypatch.setattr(stopping.pipeline, "speak", lambda _: asyncio.sleep(3600))
    speaking = asyncio.create_task(cluster.asker.speak(SpeechRequest(text=TEXT)))
    async with asyncio.timeout(5):
        while not stopping.running:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await cluster.stop_worker(stopping)
    other = await cluster.add_worker(claim_idle_s=600)
    async with asyncio.timeout(30):
        await speaking
    assert other.made == 1


def test_synth_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="mode"):
        SynthSettings.model_validate({"mode": "somewhere"})
    with pytest.raises(ValueError, match="concurrency"):
        SynthSettings.model_validate({"concurrency": 0})


def test_piper_gets_one_onnxruntime_thread_in_a_synth_process(tmp_path: Path) -> None:
    from integrations.piper import models
    from integrations.piper.engine import open_voice

    def threads(**fields: Any) -> int:
        return onnx_threads(config.load(data_dir=tmp_path, **fields))

    assert threads() == 0  # every role, one process: every core
    assert threads(run={"roles": ["synth"]}) == 1
    assert threads(run={"roles": ["synth", "api"]}) == 1
    assert threads(run={"roles": ["gateway"]}) == 0
    assert threads(run={"roles": ["synth"]}, synth={"onnx_threads": 0}) == 0
    path = models.builtin_model_path()
    voice = open_voice(path, models.config_path_of(path), threads=1)
    assert voice.session.get_session_options().intra_op_num_threads == 1


async def test_a_streaming_provider_stays_live_through_a_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    # 0.2 s of audio per event, one event every 0.2 s: as fast as it plays
    async with TimedTogether(chunk_seconds=0.2, chunk_delay=0.2) as together:
        cluster.providers = {
            "together": {"base_url": together.base_url, "api_key": "test-together-key"}
        }
        await cluster.add_worker()
        settings = settings_for(tmp_path, cluster.url, "live", mode="workers")
        settings = config.load(
            **settings.model_dump(mode="json", exclude={"providers"}),
            providers=cluster.providers,
        )
        asker = SpeechPipeline(settings)
        asker.remote = RemoteSynthesis(cluster.queue, settings.synth)
        try:
            live = await asker.speak_live(SpeechRequest(text=TEXT, provider="together"))
            assert isinstance(live, LiveUtterance)
            first, packets = 0.0, []
            async for packet in live.packets():
                first = first or time.monotonic()
                packets.append(packet)
            utterance = await live.result()
        finally:
            await asker.aclose()
    assert len(together.sent) > 5
    assert first < together.sent[-1]  # heard while the server was still sending
    assert opus_packets(utterance.audio) == packets
    assert utterance.voice.provider == "together"


async def test_consumers_long_gone_are_dropped_from_the_group(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.synthesis import workers as module

    monkeypatch.setattr(module, "CONSUMER_GONE_S", 0.2)
    client = cluster.queue.client
    await client.xgroup_create(cluster.queue.jobs, GROUP, id="0", mkstream=True)
    await client.xreadgroup(GROUP, "ended-long-ago", {cluster.queue.jobs: ">"}, count=1)
    await asyncio.sleep(0.3)
    workers = await cluster.add_worker()
    async with asyncio.timeout(10):
        while True:
            names = [c["name"] for c in await client.xinfo_consumers(cluster.queue.jobs, GROUP)]
            if "ended-long-ago" not in names:
                break
            await asyncio.sleep(0.05)
    assert workers.consumer in names


async def test_a_job_that_kills_its_workers_is_given_up(cluster: Cluster) -> None:
    speaking, entry = await read_by_a_dead_worker(cluster, "dead-1")
    for consumer in ("dead-2", "dead-3"):  # taken over by two more: all died
        await cluster.queue.client.xclaim(cluster.queue.jobs, GROUP, consumer, 0, [entry])
    await asyncio.sleep(1.1)  # idle past claim_idle_s
    workers = await cluster.add_worker()
    with pytest.raises(WorkerFailed, match="3 synth workers died making it"):
        async with asyncio.timeout(30):
            await speaking
    assert workers.made == 0
