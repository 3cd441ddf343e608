"""Synthesis in the worker processes of the ``synth`` role, seen from the asking process.

A process that misses the audio cache hands the synthesis (one sentence: :meth:`SpeechPipeline.
speak_sentences` speaks each alone) to the workers (:mod:`bot.synthesis.workers`) as a job on
the stream ``<prefix>synth:jobs`` (consumer group ``synth``), and hears the answer on its own
reply stream ``<prefix>synth:replies:<asker>``, which one task per process reads for every job
(one connection, however many requests wait). A live job's Opus packets come as they are
encoded (``chunk`` messages), then the whole utterance (``done``) or the error (``error``).
Validation (:meth:`SpeechPipeline.prepare`) and cache hits stay in the asking process.

The asker waits at most until the request's expiry, else :attr:`SynthSettings.timeout_s`, and
fails with :class:`WorkersUnavailable` when no worker has been alive (the heartbeat key
``<prefix>synth:alive``) for two looks in a row, or with :class:`WorkerTimeout`: never hangs.
The job carries that deadline, so a worker never makes audio nobody waits for.
Redis streams: https://redis.io/docs/latest/develop/data-types/streams/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import bot.errors
from bot.audio.live import LiveUtterance
from bot.errors import OyezError, RequestExpired
from bot.ops.config import SynthSettings
from bot.ops.metrics import SYNTH_JOBS
from bot.ops.streams import raise_if_cancelled
from bot.speech import FallbackNote, OutputProfile, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis.prepared import PreparedRequest

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = [
    "GROUP",
    "IN_WORKER",
    "LIVENESS_S",
    "RemoteSynthesis",
    "SynthQueue",
    "WorkerFailed",
    "WorkerTimeout",
    "WorkersUnavailable",
    "decode_error",
    "decode_utterance",
    "encode_error",
    "encode_job",
    "encode_utterance",
]

log = logging.getLogger(__name__)

#: The consumer group every synth worker reads the jobs in.
GROUP = "synth"
#: Seconds between two looks, while waiting, at whether any worker is alive.
LIVENESS_S = 5.0
#: Seconds an asker's reply stream outlives its last answer (the asker died: it goes).
REPLY_TTL_S = 600
#: Seconds ``auto`` trusts one look at the heartbeat.
ALIVE_CACHE_S = 1.0
#: Set while a worker of this process makes a job: that synthesis is made here, never sent on.
IN_WORKER: ContextVar[bool] = ContextVar("oyez_in_synth_worker", default=False)


class WorkerFailed(OyezError):
    """A synth worker failed with an error that is not one of :mod:`bot.errors`."""


class WorkerTimeout(OyezError):
    """No worker answered a job before its deadline."""


class WorkersUnavailable(OyezError):
    """No synth worker is alive (``synth.mode: workers``, or the last one died)."""


_OWN_ERRORS: dict[str, type[OyezError]] = {
    c.__name__: c for c in (WorkerFailed, WorkerTimeout, WorkersUnavailable)
}


@dataclasses.dataclass(frozen=True, slots=True)
class SynthQueue:
    """The keys of the jobs' stream, the heartbeat and the reply streams under ``prefix``."""

    client: Redis
    prefix: str = "oyez:"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}synth:jobs"

    @property
    def alive(self) -> str:
        return f"{self.prefix}synth:alive"

    def replies(self, asker: str) -> str:
        return f"{self.prefix}synth:replies:{asker}"


def encode_utterance(utterance: Utterance) -> dict[str, str]:
    """The fields of a ``done`` message: the audio (base64) and the rest as JSON."""
    meta = dataclasses.asdict(utterance)
    del meta["audio"]
    meta["profile"] = utterance.profile.value
    return {"audio": base64.b64encode(utterance.audio).decode(), "meta": json.dumps(meta)}


def decode_utterance(fields: Mapping[str, str]) -> Utterance:
    """The :class:`Utterance` of a ``done`` message."""
    meta = json.loads(fields["meta"])
    meta["profile"] = OutputProfile(meta["profile"])
    meta["voice"] = Voice(**meta["voice"])
    meta["timings"] = Timings(**meta["timings"])
    meta["fallbacks"] = tuple(FallbackNote(**n) for n in meta["fallbacks"])
    return Utterance(audio=base64.b64decode(fields["audio"]), **meta)


def encode_error(exc: BaseException) -> dict[str, str]:
    """The fields of an ``error`` message: the exception's type, message and plain attributes."""
    plain = {
        k: v
        for k, v in vars(exc).items()
        if isinstance(v, str | int | float | bool | list | type(None))
    }
    return {"type": type(exc).__name__, "message": str(exc), "attrs": json.dumps(plain)}


def decode_error(fields: Mapping[str, str]) -> OyezError:
    """The worker's error again: the same :mod:`bot.errors` class (so callers catch what they
    mean), message and attributes; :class:`WorkerFailed` for any other."""
    name, message = fields.get("type", ""), fields.get("message", "")
    cls = _OWN_ERRORS.get(name) or getattr(bot.errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, OyezError)):
        return WorkerFailed(f"the synth worker failed: {name}: {message}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        for key, value in json.loads(fields.get("attrs", "{}")).items():
            setattr(exc, key, value)
    return exc


def encode_job(
    prepared: PreparedRequest, asker: str, deadline: float, live: bool
) -> dict[Any, Any]:
    """A job's fields: the prepared request (its text said as prepared: the pronunciations
    are not applied twice), where to answer, and until when (Unix seconds)."""
    return {
        "id": uuid.uuid4().hex,
        "asker": asker,
        "deadline": repr(deadline),
        "live": "1" if live else "0",
        "request": prepared.request.model_dump_json(),
        "text": prepared.text,
        "provider": prepared.provider.name,
        "voice": json.dumps(dataclasses.asdict(prepared.voice)),
        "options": json.dumps(prepared.options),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    """A job sent: its id, its stream entry, where its answers arrive, and for what."""

    id: str
    entry: str
    answers: asyncio.Queue[Mapping[str, str]]
    prepared: PreparedRequest
    deadline: float


class RemoteSynthesis:
    """The asking side: :meth:`use` says whether a cache miss goes to the workers now,
    :meth:`speak` sends it and waits. ``mode`` is :attr:`SynthSettings.mode` for this
    process (``auto`` here means: when a worker is alive). :meth:`aclose` stops the reader."""

    def __init__(self, queue: SynthQueue, settings: SynthSettings) -> None:
        self.queue = queue
        self.settings = settings
        self.asker = uuid.uuid4().hex[:16]
        self._waiting: dict[str, asyncio.Queue[Mapping[str, str]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._alive: tuple[float, bool] = (float("-inf"), False)
        self._warned = False
        self._last = "0"  # the last reply read

    async def use(self) -> bool:
        """True when this miss is for the workers: always with ``workers``; with ``auto`` when
        one is alive (else a warning, once until one is); never with ``local``, nor for a
        worker's own job."""
        if IN_WORKER.get() or self.settings.mode == "local":
            return False
        if self.settings.mode == "workers":
            return True
        alive = await self.alive()
        if not alive and not self._warned:
            log.warning("no synth worker is alive: synthesizing in this process")
        self._warned = not alive
        return alive

    async def alive(self) -> bool:
        """Whether a worker's heartbeat is there (one look per :data:`ALIVE_CACHE_S`)."""
        from redis.exceptions import RedisError

        looked, alive = self._alive
        now = time.monotonic()
        if now - looked < ALIVE_CACHE_S:
            return alive
        try:
            alive = bool(await self.queue.client.exists(self.queue.alive))
        except (RedisError, OSError) as exc:
            log.warning("the engine cannot be reached (%s): synthesizing in this process", exc)
            alive = False
        self._alive = (now, alive)
        return alive

    def _deadline(self, request: SpeechRequest) -> float:
        """Unix seconds: the request's expiry, else :attr:`SynthSettings.timeout_s` from now."""
        overdue = request.overdue_s()
        left = self.settings.timeout_s if overdue == float("-inf") else -overdue
        return time.time() + max(0.0, left)

    async def speak(self, prepared: PreparedRequest, *, live: bool) -> Utterance | LiveUtterance:
        """``prepared`` made by a worker: the :class:`Utterance`, or with ``live`` (an Ogg Opus
        request whose provider streams) a :class:`LiveUtterance` playing as packets arrive.
        Raises the worker's error (:func:`decode_error`), :class:`RequestExpired`,
        :class:`WorkerTimeout`, :class:`WorkersUnavailable`."""
        deadline = self._deadline(prepared.request)
        fields = encode_job(prepared, self.asker, deadline, live)
        job = await self._send(fields, prepared, deadline)
        if not live:
            return await self._wait(job, None)
        stream = LiveUtterance(prepared.request.id, prepared.text, prepared.voice)
        stream.attach(asyncio.create_task(self._wait(job, stream), name="oyez-remote-live"))
        return stream

    async def _wait(self, job: _Job, stream: LiveUtterance | None) -> Utterance:
        """The job's utterance; a job given up (timed out, no worker, cancelled: the sentence
        is not wanted any more) is taken off the stream, so no worker makes it in vain."""
        try:
            utterance = await self._finished(job, stream)
        except (WorkerTimeout, WorkersUnavailable, RequestExpired, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await self.queue.client.xdel(self.queue.jobs, job.entry)
            outcome = "unavailable" if isinstance(exc, WorkersUnavailable) else "timeout"
            SYNTH_JOBS.labels("asker", outcome).inc()
            raise
        except OyezError:
            SYNTH_JOBS.labels("asker", "failed").inc()
            raise
        finally:
            self._waiting.pop(job.id, None)
        SYNTH_JOBS.labels("asker", "ok").inc()
        return utterance

    async def _send(
        self, fields: dict[Any, Any], prepared: PreparedRequest, deadline: float
    ) -> _Job:
        from redis.exceptions import RedisError

        answers: asyncio.Queue[Mapping[str, str]] = asyncio.Queue()
        self._waiting[fields["id"]] = answers
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="oyez-synth-replies")
        try:
            entry = await self.queue.client.xadd(self.queue.jobs, fields)
        except (RedisError, OSError) as exc:
            self._waiting.pop(fields["id"], None)
            raise WorkersUnavailable(f"the engine cannot be reached to queue it: {exc}") from exc
        return _Job(fields["id"], str(entry), answers, prepared, deadline)

    async def _finished(self, job: _Job, stream: LiveUtterance | None) -> Utterance:
        prepared, deadline = job.prepared, job.deadline
        dead_looks = 0
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise self._late(prepared)
            try:
                async with asyncio.timeout(min(left, LIVENESS_S)):
                    answer = await job.answers.get()
            except TimeoutError:
                dead_looks = 0 if await self.alive() else dead_looks + 1
                if dead_looks >= 2:
                    raise WorkersUnavailable(
                        f"request {prepared.request.id}: no synth worker is alive (start "
                        "`oyez run --role synth`, or set synth.mode to local)"
                    ) from None
                continue
            kind = answer.get("kind")
            if kind == "chunk" and stream is not None:
                for packet in json.loads(answer["packets"]):
                    stream.put(base64.b64decode(packet))
            elif kind == "done":
                return decode_utterance(answer)
            elif kind == "error":
                raise decode_error(answer)
            log.debug("job %s: %s message ignored", job.id, kind)

    def _late(self, prepared: PreparedRequest) -> OyezError:
        request = prepared.request
        if request.overdue_s() > 0:
            return RequestExpired(request.id, request.overdue_s(), "waiting for a synth worker")
        return WorkerTimeout(
            f"request {request.id}: no synth worker answered within "
            f"{self.settings.timeout_s:g} s (synth.timeout_s)"
        )

    async def _read(self) -> None:
        """Hand each message of this process's reply stream to the job waiting for it."""
        from redis.exceptions import RedisError

        name, client = self.queue.replies(self.asker), self.queue.client
        while self._waiting:
            try:
                found: Any = await client.xread({name: self._last}, count=256, block=1000)
                raise_if_cancelled()
                for _, messages in found or []:
                    for message_id, fields in messages:
                        self._last = message_id
                        waiting = self._waiting.get(fields.get("job", ""))
                        if waiting is not None:
                            waiting.put_nowait(fields)
                if found:
                    await client.xtrim(name, minid=self._last)
            except (RedisError, OSError) as exc:
                log.warning("synth replies: reading failed: %s", exc)
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
