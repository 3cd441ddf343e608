"""Discord announcements taken by a process that does not run the guild's shard (an ``api`` or
``coordinator`` process, or a gateway running other shards), handed to the one that does
through the engine.

Each shard has a stream ``<prefix>discord:deliveries:<shard>``; :class:`RelayedDiscordSink`
adds a job (the target and the speech request, as JSON) to the stream of the guild's shard,
``(guild_id >> 22) % shard_count``, and waits for its result on the list
``<prefix>discord:delivery:<job id>``. In each gateway process a :class:`DeliveryWorker` reads
the streams of its shards in the consumer group ``gateway``, speaks each job through its own
:class:`~integrations.discord.service.DiscordSink`, pushes the result and acknowledges the job.
Redis streams and consumer groups: https://redis.io/docs/latest/develop/data-types/streams/.

Failover: a job read by a gateway process stays pending in the group until it is answered. A
live worker claims its jobs again (``XCLAIM … JUSTID``) every third of ``takeover_s``, so
their idle time never reaches it, however long the speech; a worker takes over with
``XAUTOCLAIM`` the jobs of its shards idle longer than that (their process died: a restarted
process has a new consumer name). Each job carries the asker's deadline as its request's
``expires_at``: past it the job is answered expired, never spoken (the player drops it too
if it is still waiting then), so an asker that gave up never hears it spoken late. The asker
waits until the deadline, then as long as a live worker holds the job (it started speaking
before the deadline), and reports the target failed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from bot.announce.model import Announcement, Target, TargetResult
from bot.ops.config import DiscordChannel
from bot.ops.streams import forget_consumers, raise_if_cancelled, take_over
from bot.speech import OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from integrations.discord.shards import shard_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["GROUP", "RELAY_TIMEOUT_S", "TAKEOVER_S", "DeliveryWorker", "RelayedDiscordSink"]

log = logging.getLogger(__name__)

GROUP = "gateway"
#: Seconds a relayed delivery may wait for a gateway process to start speaking it.
RELAY_TIMEOUT_S = 180.0
#: Seconds a job read by a process that no longer claims it waits before another takes it.
TAKEOVER_S = 15.0
#: Seconds the asker waits past the deadline for an answer on its way (an "expired" one).
ANSWER_GRACE_S = 2.0
#: Seconds a job that started before its deadline may go on speaking (as the guild players
#: wait for an announcement: its ttl plus ten minutes).
SPEAKING_S = 600.0
#: Seconds one blocking read waits at most: under redis-py's socket timeout (5 s by default
#: since redis-py 8), past which a read blocked on the server fails as a timeout.
BLOCK_S = 2.0
#: Seconds one read of the answers blocks: how late an answer awaited since may be read.
POLL_S = 0.25
#: Times a gateway tries to push a job's answer before leaving the job to a takeover.
ANSWER_TRIES = 5
#: Seconds an answer nobody collected is kept.
REPLY_TTL_S = 600
#: Jobs kept in each shard's stream at most (approximately; the oldest are trimmed).
STREAM_MAXLEN = 10_000


def stream_of(prefix: str, shard_id: int) -> str:
    return f"{prefix}discord:deliveries:{shard_id}"


def reply_of(prefix: str, job: str) -> str:
    return f"{prefix}discord:delivery:{job}"


class RelayedDiscordSink:
    """The ``discord`` sink of a process without the guild's shard: each target is a job for
    the gateway process that runs it. A target fails (never raises) when the engine cannot be
    reached, or when no gateway process started speaking it within ``timeout_s`` (or before
    the request's own ``expires_at``, if sooner) and none holds it alive then. Returns no
    utterance: the status of a relayed announcement has no provider or duration of its own.
    ``takeover_s``: the gateways' (``discord.relay_takeover_s``); a job idle longer than that
    has no live holder."""

    kind: ClassVar[str] = "discord"
    profile = OutputProfile.OGG_OPUS

    def __init__(  # noqa: PLR0913 - the engine, the shards and the pipeline, then options
        self,
        client: Redis,
        prefix: str,
        shard_count: int,
        pipeline: SpeechPipeline,
        *,
        split_sentences: bool = True,
        timeout_s: float = RELAY_TIMEOUT_S,
        takeover_s: float = TAKEOVER_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shard_count = shard_count
        self.pipeline = pipeline
        self.split_sentences = split_sentences
        self.timeout_s = timeout_s
        self.takeover_s = takeover_s
        self._answers = _Answers(client)

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,  # noqa: ARG002 - the Sink protocol
        prepared: PreparedRequest | None = None,  # noqa: ARG002 - each guild prepares its own
    ) -> tuple[list[TargetResult], Utterance | None]:
        results = await asyncio.gather(*(self.relay(t, request) for t in targets))
        return list(results), None

    async def warm(self, request: SpeechRequest, targets: list[Target]) -> None:
        """Make the audio ahead into the shared cache, as the gateway's players will ask for it
        (see :meth:`DiscordSink.warm`)."""
        guilds = dict.fromkeys(str(t.guild_id) for t in targets if isinstance(t, DiscordChannel))
        for guild in guilds or [request.guild]:
            sentences = self.pipeline.speak_sentences(
                request.model_copy(update={"guild": guild}), split=self.split_sentences
            )
            async for _ in sentences:
                pass

    async def relay(self, target: Target, request: SpeechRequest) -> TargetResult:
        """Hand ``target`` to its shard's gateway process; its result."""
        from redis.exceptions import RedisError

        assert isinstance(target, DiscordChannel)
        name = str(target)
        shard = shard_of(target.guild_id, self.shard_count)
        deadline = datetime.now(UTC) + timedelta(seconds=self.timeout_s)
        if request.expires_at is not None:
            deadline = min(deadline, request.expires_at)
        job = uuid.uuid4().hex
        fields: dict[Any, Any] = {
            "id": job,
            "target": target.model_dump_json(),
            "request": request.model_copy(update={"expires_at": deadline}).model_dump_json(),
        }
        stream = stream_of(self.prefix, shard)
        try:
            message_id = await self.client.xadd(
                stream, fields, maxlen=STREAM_MAXLEN, approximate=True
            )
            answer = await self._answer(stream, message_id, job, deadline)
        except (RedisError, OSError) as exc:
            return TargetResult(name, False, f"the engine cannot be reached: {exc}")
        finally:
            self._answers.forget(reply_of(self.prefix, job))
        if answer is None:
            reason = f"no gateway process of shard {shard} spoke it within {self.timeout_s:g} s"
            return TargetResult(name, False, reason)
        return TargetResult(**json.loads(answer))

    async def _answer(
        self, stream: str, message_id: Any, job: str, deadline: datetime
    ) -> str | None:
        """The job's answer: waited for until ``deadline``, then while a live worker holds it
        (at most :data:`SPEAKING_S` more). None: nobody will speak it (any later holder
        answers it expired)."""
        reply = reply_of(self.prefix, job)
        loop = asyncio.get_running_loop()
        left_s = (deadline - datetime.now(UTC)).total_seconds()
        answer = await self._pop(reply, loop.time() + max(left_s, 0.0) + ANSWER_GRACE_S)
        give_up = loop.time() + SPEAKING_S
        while answer is None and loop.time() < give_up and await self._held(stream, message_id):
            answer = await self._pop(reply, loop.time() + max(self.takeover_s / 3, 0.1))
        if answer is None:  # answered (and acknowledged) since the last wait: the reader's
            answer = await self._pop(reply, loop.time() + 2 * POLL_S)  # next poll has it
        return answer

    async def _pop(self, reply: str, until: float) -> str | None:
        """The answer on ``reply``, waited for until the loop's time ``until``; None if none
        came."""
        return await self._answers.wait(reply, until - asyncio.get_running_loop().time())

    async def _held(self, stream: str, message_id: Any) -> bool:
        """Whether a worker that still claims it has the job (read, not idle too long)."""
        pending: Any = await self.client.xpending_range(
            stream, GROUP, min=message_id, max=message_id, count=1
        )
        return bool(pending) and pending[0]["time_since_delivered"] < self.takeover_s * 1000


class _Answers:
    """The answers this process waits for, read by one task on one connection: a ``BLPOP`` on
    every awaited reply list at once, :data:`POLL_S` at a time (a blocked connection per
    waiting target would use up the engine's pool with an announcement to many channels). A
    list awaited since the last poll is read at the next, so an answer may come up to
    :data:`POLL_S` late; none is lost (it waits in its list)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def wait(self, reply: str, timeout_s: float) -> str | None:
        """The answer on ``reply`` within ``timeout_s``, else None; raises the engine's error
        when it cannot be read."""
        future = self._waiting.get(reply)
        if future is None:
            future = self._waiting[reply] = asyncio.get_running_loop().create_future()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="oyez-discord-relay-answers")
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(timeout_s, 0.0))
        except TimeoutError:
            return None

    def forget(self, reply: str) -> None:
        """No longer wait for ``reply``; the reader stops when nothing is awaited."""
        future = self._waiting.pop(reply, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # retrieved: an error nobody awaited any more is not logged
        elif future is not None:
            future.cancel()
        if not self._waiting and self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        try:
            while keys := [k for k, f in self._waiting.items() if not f.done()]:
                found: Any = await self.client.blpop(keys, timeout=POLL_S)
                raise_if_cancelled()
                if found is not None:
                    future = self._waiting.get(str(found[0]))
                    if future is not None and not future.done():
                        future.set_result(str(found[1]))
        except (RedisError, OSError) as exc:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(exc)


#: Speaks a request in a channel through this process's bot: its result (and utterance).
Speak = Callable[[DiscordChannel, SpeechRequest], Awaitable[tuple[TargetResult, Utterance | None]]]


class DeliveryWorker:
    """Speaks the jobs of ``shard_ids``' streams with ``speak`` (the local
    :meth:`DiscordSink.speak_here`) once ``ready`` returns (the bot is connected), several at
    once (each guild's queue keeps their order), until cancelled. It keeps its jobs claimed,
    and takes over those another consumer left idle for ``takeover_s`` (see the module)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        shard_ids: list[int],
        speak: Speak,
        ready: Callable[[], Awaitable[None]],
        *,
        takeover_s: float = TAKEOVER_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shard_ids = shard_ids
        self.speak = speak
        self.ready = ready
        self.takeover_s = takeover_s
        self.consumer = uuid.uuid4().hex[:12]
        #: Jobs taken over from another consumer, since start.
        self.taken_over = 0
        self._held: dict[str, set[str]] = {stream_of(prefix, s): set() for s in shard_ids}
        self._jobs: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        from redis.exceptions import RedisError, ResponseError

        await self.ready()
        for stream in self._held:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: another process made it
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        with contextlib.suppress(RedisError, OSError):  # tried again by _keep_claims
            await self._take_over()  # what a dead process left, before the new jobs
        claims = asyncio.create_task(self._keep_claims(), name="oyez-discord-relay-claims")
        try:
            await self._read()
        finally:
            claims.cancel()
            for task in [claims, *self._jobs]:
                task.cancel()
            await asyncio.gather(claims, *self._jobs, return_exceptions=True)

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        streams: dict[Any, Any] = dict.fromkeys(self._held, ">")
        while True:
            try:
                entries: Any = await self.client.xreadgroup(
                    GROUP, self.consumer, streams, count=16, block=round(BLOCK_S * 1000)
                )
            except (RedisError, OSError) as exc:
                log.warning("discord relay: reading the deliveries failed: %s", exc)
                await asyncio.sleep(1)
                continue
            raise_if_cancelled()
            for stream, messages in entries or []:
                for message_id, fields in messages:
                    self._start(str(stream), str(message_id), fields)

    def _start(self, stream: str, message_id: str, fields: dict[str, str]) -> None:
        if message_id in self._held[stream]:
            return  # already speaking it
        self._held[stream].add(message_id)
        task = asyncio.create_task(self._deliver(stream, message_id, fields))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _keep_claims(self) -> None:
        """Every third of ``takeover_s``: claim this worker's jobs again (their idle time back
        to 0), then take over the jobs of its shards idle longer than ``takeover_s``."""
        from redis.exceptions import RedisError

        while True:
            try:
                await self._refresh()
                await self._take_over()
            except (RedisError, OSError) as exc:
                log.warning("discord relay: claiming the deliveries failed: %s", exc)
            await asyncio.sleep(self.takeover_s / 3)

    async def _refresh(self) -> None:
        for stream, held in self._held.items():
            if held:
                await self.client.xclaim(stream, GROUP, self.consumer, 0, list(held), justid=True)

    async def _take_over(self) -> None:
        """Take over the jobs of this worker's shards idle longer than ``takeover_s``, then
        drop the consumers idle for two takeover times with nothing pending."""
        idle_ms = round(self.takeover_s * 1000)
        for stream in self._held:
            for message_id, fields in await take_over(
                self.client, stream, GROUP, self.consumer, idle_ms
            ):
                if fields is None:  # trimmed from the stream: nothing left to speak
                    await self.client.xack(stream, GROUP, message_id)
                    continue
                log.info("discord relay: taking over job %s", fields.get("id"))
                self.taken_over += 1
                self._start(stream, str(message_id), fields)
            await forget_consumers(self.client, stream, GROUP, self.consumer, 2 * idle_ms)

    async def _deliver(self, stream: str, message_id: str, fields: dict[str, str]) -> None:
        try:
            result = await self._spoken(fields)
            await self._answer(stream, message_id, str(fields.get("id")), result)
        finally:
            self._held[stream].discard(message_id)

    async def _answer(self, stream: str, message_id: str, job: str, result: TargetResult) -> None:
        """Push ``result`` and acknowledge the job, in one transaction, tried
        :data:`ANSWER_TRIES` times a second apart (the job, still claimed meanwhile, would be
        spoken again once taken over)."""
        from redis.exceptions import RedisError

        reply = reply_of(self.prefix, job)
        for attempt in range(1, ANSWER_TRIES + 1):
            try:
                async with self.client.pipeline(transaction=True) as answer:  # all or none
                    answer.rpush(reply, json.dumps(asdict(result)))
                    answer.expire(reply, REPLY_TTL_S)
                    answer.xack(stream, GROUP, message_id)
                    await answer.execute()
                return
            except (RedisError, OSError) as exc:
                log.warning("discord relay: answering job %s failed (%s): %s", job, attempt, exc)
                await asyncio.sleep(1)

    async def _spoken(self, fields: dict[str, str]) -> TargetResult:
        """The job spoken, or why not: expired (past the asker's deadline) or malformed."""
        try:
            target = DiscordChannel.model_validate_json(fields["target"])
            request = SpeechRequest.model_validate_json(fields["request"])
        except Exception as exc:  # a malformed job: answered, never retried
            log.warning("discord relay: job %s is malformed: %s", fields.get("id"), exc)
            return TargetResult(str(fields.get("target")), False, str(exc) or "bad job")
        overdue = request.overdue_s()
        if overdue > 0:
            reason = f"expired {overdue:.1f} s ago, before a gateway process could speak it"
            return TargetResult(str(target), False, reason, expired=True)
        try:
            result, _ = await self.speak(target, request)
        except Exception as exc:
            log.warning("discord relay: job %s failed: %s", fields.get("id"), exc)
            return TargetResult(str(target), False, str(exc) or type(exc).__name__)
        return result
