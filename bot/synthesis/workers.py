"""The ``synth`` role: workers that make the audio other processes missed in the cache.

:class:`SynthWorkers` (a front end of ``oyez run``, built by :mod:`bot.service` when the process
runs the synth role and shares an engine) reads the jobs of :mod:`bot.synthesis.remote` in the
consumer group ``synth``, at most :attr:`SynthSettings.concurrency` at once (it reads no more
than it has room for, so a worker that dies holds no more than that), makes each with this
process's :class:`~bot.synthesis.pipeline.SpeechPipeline` (its cache, flights, shared limiter,
books and queued jobs: a job taken over resumes a paid Segmind v2 job rather than paying
again), answers on the asker's reply stream, then acknowledges and deletes the job.

- Takeover: every ``claim_idle_s / 3`` the worker renews its claim on the jobs it is making
  (``XCLAIM … JUSTID``: their idle time starts again, so a two-minute Orpheus job is not taken
  from a live worker) and takes over, with ``XAUTOCLAIM``, the jobs idle longer than
  ``claim_idle_s`` (their worker died).
- Heartbeat: ``<prefix>synth:alive`` is set with a TTL of :data:`HEARTBEAT_TTL_S` every third
  of it: askers in ``auto`` mode send jobs only while it is there.
- A job past its deadline is answered with :class:`~bot.errors.RequestExpired` unmade. A job
  under way when the worker is stopped is put back on the stream for another. A job taken
  over more than :data:`MAX_DELIVERIES` − 1 times (each of its workers died) is answered
  failed rather than kill one more.

XCLAIM/XAUTOCLAIM: https://redis.io/docs/latest/commands/xautoclaim/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.audio.live import LiveUtterance
from bot.errors import RequestExpired
from bot.ops.config import SynthSettings
from bot.ops.metrics import SYNTH_JOBS
from bot.ops.streams import forget_consumers, raise_if_cancelled, take_over
from bot.speech import SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from bot.synthesis.remote import (
    GROUP,
    IN_WORKER,
    REPLY_TTL_S,
    SynthQueue,
    WorkerFailed,
    encode_error,
    encode_utterance,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["HEARTBEAT_TTL_S", "MAX_DELIVERIES", "SynthWorkers"]

log = logging.getLogger(__name__)

#: Seconds the heartbeat lasts unless renewed (renewed every third of it).
HEARTBEAT_TTL_S = 10.0
#: Milliseconds one read of the stream blocks for new jobs.
READ_BLOCK_MS = 1000
#: Rounds of XAUTOCLAIM's cursor one take-over pass goes through at most.
AUTOCLAIM_ROUNDS = 10
#: Deliveries of a job (its first read, then each take-over) before it is given up.
MAX_DELIVERIES = 3
#: Seconds a consumer holding no job stays in the group after its last read.
CONSUMER_GONE_S = 3600.0


class SynthWorkers:
    """Makes the synthesis jobs of the engine's stream with ``pipeline`` until cancelled."""

    name = "synth"

    def __init__(
        self, pipeline: SpeechPipeline, queue: SynthQueue, settings: SynthSettings
    ) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.settings = settings
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self.made = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def client(self) -> Redis:
        return self.queue.client

    async def idle(self) -> bool:
        """Always: workers alone are no reason for a process with every role to run."""
        return True

    def ready(self) -> tuple[bool, str]:
        return True, f"{len(self.running)} of {self.settings.concurrency} synthesis jobs under way"

    async def start(self) -> None:
        """Create the consumer group (if no worker has) and beat once."""
        from redis.exceptions import ResponseError

        with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker made it
            await self.client.xgroup_create(self.queue.jobs, GROUP, id="0", mkstream=True)
        await self._beat()
        log.info("synth: %s makes up to %d jobs at once", self.consumer, self.settings.concurrency)

    async def serve(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="oyez-synth-heartbeat"),
            asyncio.create_task(self._claims(), name="oyez-synth-claims"),
        ]
        try:
            await self._pull()
        finally:
            await self._stop_tasks()

    async def stop(self) -> None:
        """Stop reading (a cancel can be lost in redis-py's blocking read on Python 3.11: the
        loop also ends on its own within :data:`READ_BLOCK_MS`) and put back the jobs under
        way."""
        self._stopping = True
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        tasks = [*self._tasks, *self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _beat(self) -> None:
        await self.client.set(self.queue.alive, self.consumer, px=round(HEARTBEAT_TTL_S * 1000))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TTL_S / 3)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("synth: heartbeat failed: %s", exc)

    async def _pull(self) -> None:
        """Read jobs while there is room, taking over idle ones first when it is time."""
        from redis.exceptions import RedisError

        next_claim = time.monotonic()
        while not self._stopping:
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                await asyncio.wait(self.running.values(), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                entries: list[Any] = []
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self.settings.claim_idle_s / 3
                    entries = await self._take_over(free)
                if not entries:
                    found: Any = await self.client.xreadgroup(
                        GROUP,
                        self.consumer,
                        {self.queue.jobs: ">"},
                        count=free,
                        block=READ_BLOCK_MS,
                    )
                    entries = [e for _, messages in found or [] for e in messages]
            except (RedisError, OSError) as exc:
                log.warning("synth: reading the jobs failed: %s", exc)
                await asyncio.sleep(1)
                continue
            raise_if_cancelled()
            for message_id, fields in entries:
                if message_id not in self.running and fields:
                    task = asyncio.create_task(self._run(message_id, fields), name="oyez-synth-job")
                    self.running[message_id] = task
                    task.add_done_callback(functools.partial(self._done, message_id))

    def _done(self, message_id: str, _: asyncio.Task[None]) -> None:
        self.running.pop(message_id, None)

    async def _take_over(self, count: int) -> list[Any]:
        """Up to ``count`` jobs idle past ``claim_idle_s`` (their worker died), now this
        one's: the pending entries are scanned from the start (a few rounds of XAUTOCLAIM's
        cursor at most); consumers long gone are dropped from the group."""
        idle_ms = round(self.settings.claim_idle_s * 1000)
        claimed = await take_over(
            self.client,
            self.queue.jobs,
            GROUP,
            self.consumer,
            idle_ms,
            per_round=count,
            limit=count,
            rounds=AUTOCLAIM_ROUNDS,
        )
        taken: list[Any] = [e for e in claimed if e[1]]  # an entry deleted since has no fields
        if taken:
            log.warning("synth: took over %d jobs of a worker that went silent", len(taken))
            SYNTH_JOBS.labels("worker", "taken_over").inc(len(taken))
            taken = await self._not_poisoned(taken)
        # the consumers of workers that ended (one per process ever started would pile up)
        await forget_consumers(
            self.client, self.queue.jobs, GROUP, self.consumer, CONSUMER_GONE_S * 1000
        )
        return taken

    async def _not_poisoned(self, entries: list[Any]) -> list[Any]:
        """``entries`` but those delivered more than :data:`MAX_DELIVERIES` times (every worker
        making them died: a text that crashes the engine would take the workers down one after
        another until its deadline): those are answered failed and deleted."""
        kept = []
        for message_id, fields in entries:
            pending: Any = await self.client.xpending_range(
                self.queue.jobs, GROUP, min=message_id, max=message_id, count=1
            )
            times = int(pending[0]["times_delivered"]) if pending else 1
            if times <= MAX_DELIVERIES:
                kept.append((message_id, fields))
                continue
            log.error("synth: job %s given up: %d workers died making it", fields.get("id"), times)
            given_up = WorkerFailed(
                f"its synthesis was given up: {times - 1} synth workers died making it"
            )
            answer = {"kind": "error", **encode_error(given_up)}
            await self._answer(fields.get("asker", ""), fields.get("id", "?"), answer)
            await self._finish(message_id)
            SYNTH_JOBS.labels("worker", "failed").inc()
        return kept

    async def _claims(self) -> None:
        """Renew the claim on the jobs under way (their idle time starts again)."""
        idle_ms = round(self.settings.claim_idle_s * 1000)
        while True:
            await asyncio.sleep(self.settings.claim_idle_s / 3)
            ids: list[Any] = list(self.running)
            if not ids:
                continue
            try:
                await self.client.xclaim(
                    self.queue.jobs, GROUP, self.consumer, 0, ids, justid=True, idle=0
                )
            except Exception as exc:
                log.warning(
                    "synth: renewing %d claims failed (%s); idle limit %d ms",
                    len(ids),
                    exc,
                    idle_ms,
                )

    async def _run(self, message_id: str, fields: Mapping[str, str]) -> None:
        """Make one job and answer it; put it back on the stream if cancelled midway."""
        job, asker = fields.get("id", "?"), fields.get("asker", "")
        IN_WORKER.set(True)  # this task's context only
        try:
            answer = await self._make(fields)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._finish(message_id, requeue=fields)
                SYNTH_JOBS.labels("worker", "requeued").inc()
            raise
        except Exception as exc:
            expired = isinstance(exc, RequestExpired)
            if not expired:
                log.warning("synth: job %s failed: %s: %s", job, type(exc).__name__, exc)
            SYNTH_JOBS.labels("worker", "expired" if expired else "failed").inc()
            answer = {"kind": "error", **encode_error(exc)}
        else:
            SYNTH_JOBS.labels("worker", "made").inc()
        try:
            await self._answer(asker, job, answer)
            await self._finish(message_id)
        except Exception as exc:  # unacknowledged: taken over once idle
            log.warning("synth: answering job %s failed: %s", job, exc)

    async def _make(self, fields: Mapping[str, str]) -> dict[str, str]:
        prepared = self._prepared(fields)
        deadline = float(fields["deadline"])
        if time.time() > deadline:
            raise RequestExpired(
                prepared.request.id, time.time() - deadline, "waiting in the synthesis queue"
            )
        if fields.get("live") != "1":
            utterance = await self.pipeline.speak(prepared)
        else:
            speech = await self.pipeline.speak_live(prepared)
            if isinstance(speech, LiveUtterance):
                await self._forward(fields, speech)
                utterance = await speech.result()
            else:
                utterance = speech
        self.made += 1
        return {"kind": "done", **encode_utterance(utterance)}

    def _prepared(self, fields: Mapping[str, str]) -> PreparedRequest:
        """The asker's prepared request again (checked there: not prepared again here)."""
        request = SpeechRequest.model_validate_json(fields["request"])
        provider = self.pipeline.registry.get(fields["provider"])
        voice = Voice(**json.loads(fields["voice"]))
        options = json.loads(fields["options"])
        return PreparedRequest(request, fields["text"], provider, voice, options)

    async def _forward(self, fields: Mapping[str, str], speech: LiveUtterance) -> None:
        """A live job's packets to the asker as they come: those that arrive while one message
        is sent go together in the next. Raises what the synthesis raised."""
        batch: list[str] = []
        arrived = asyncio.Event()
        ended = False

        async def collect() -> None:
            nonlocal ended
            try:
                async for packet in speech.packets():
                    batch.append(base64.b64encode(packet).decode())
                    arrived.set()
            finally:
                ended = True
                arrived.set()

        collector = asyncio.create_task(collect(), name="oyez-synth-packets")
        try:
            while not (ended and not batch):
                await arrived.wait()
                arrived.clear()
                taken = batch[:]
                batch.clear()
                if taken:
                    await self._answer(fields["asker"], fields["id"], _chunk(taken))
            await collector
        finally:
            collector.cancel()

    async def _answer(self, asker: str, job: str, fields: dict[str, str]) -> None:
        name = self.queue.replies(asker)
        async with self.client.pipeline(transaction=False) as pipe:
            message: dict[Any, Any] = {"job": job, **fields}
            pipe.xadd(name, message)
            pipe.expire(name, REPLY_TTL_S)
            await pipe.execute()

    async def _finish(self, message_id: str, requeue: Mapping[str, str] | None = None) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            if requeue is not None:
                again: dict[Any, Any] = dict(requeue)
                pipe.xadd(self.queue.jobs, again)
            pipe.xack(self.queue.jobs, GROUP, message_id)
            pipe.xdel(self.queue.jobs, message_id)
            await pipe.execute()


def _chunk(batch: list[str]) -> dict[str, str]:
    return {"kind": "chunk", "packets": json.dumps(batch)}
