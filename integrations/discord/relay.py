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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from bot.announce.model import Announcement, Target, TargetResult
from bot.ops.config import DiscordChannel
from bot.speech import OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.shards import shard_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["GROUP", "RELAY_TIMEOUT_S", "DeliveryWorker", "RelayedDiscordSink"]

log = logging.getLogger(__name__)

GROUP = "gateway"
#: Seconds a relayed delivery waits for the gateway process's answer (its speech included).
RELAY_TIMEOUT_S = 180.0
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
    reached or no gateway answers within :data:`RELAY_TIMEOUT_S`. Returns no utterance: the
    status of a relayed announcement has no provider or duration of its own."""

    kind: ClassVar[str] = "discord"
    profile = OutputProfile.OGG_OPUS

    def __init__(
        self,
        client: Redis,
        prefix: str,
        shard_count: int,
        pipeline: SpeechPipeline,
        *,
        split_sentences: bool = True,
        timeout_s: float = RELAY_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shard_count = shard_count
        self.pipeline = pipeline
        self.split_sentences = split_sentences
        self.timeout_s = timeout_s

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,  # noqa: ARG002 - the Sink protocol
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
        job = uuid.uuid4().hex
        fields: dict[Any, Any] = {
            "id": job,
            "target": target.model_dump_json(),
            "request": request.model_dump_json(),
        }
        try:
            await self.client.xadd(
                stream_of(self.prefix, shard), fields, maxlen=STREAM_MAXLEN, approximate=True
            )
            answer = await self.client.blpop([reply_of(self.prefix, job)], timeout=self.timeout_s)
        except (RedisError, OSError) as exc:
            return TargetResult(name, False, f"the engine cannot be reached: {exc}")
        if answer is None:
            reason = f"no gateway process of shard {shard} answered within {self.timeout_s:g} s"
            return TargetResult(name, False, reason)
        return TargetResult(**json.loads(answer[1]))


#: Speaks a request in a channel through this process's bot: its result (and utterance).
Speak = Callable[[DiscordChannel, SpeechRequest], Awaitable[tuple[TargetResult, Utterance | None]]]


class DeliveryWorker:
    """Speaks the jobs of ``shard_ids``' streams with ``speak`` (the local
    :meth:`DiscordSink.speak_here`) once ``ready`` returns (the bot is connected), several at
    once (each guild's queue keeps their order), until cancelled."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        shard_ids: list[int],
        speak: Speak,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shard_ids = shard_ids
        self.speak = speak
        self.ready = ready
        self.consumer = uuid.uuid4().hex[:12]
        self._jobs: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        from redis.exceptions import RedisError, ResponseError

        await self.ready()
        streams: dict[Any, Any] = {stream_of(self.prefix, s): ">" for s in self.shard_ids}
        for stream in streams:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: another process made it
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        try:
            while True:
                try:
                    entries: Any = await self.client.xreadgroup(
                        GROUP, self.consumer, streams, count=16, block=5000
                    )
                except (RedisError, OSError) as exc:
                    log.warning("discord relay: reading the deliveries failed: %s", exc)
                    await asyncio.sleep(1)
                    continue
                for stream, messages in entries or []:
                    for message_id, fields in messages:
                        task = asyncio.create_task(self._deliver(stream, message_id, fields))
                        self._jobs.add(task)
                        task.add_done_callback(self._jobs.discard)
        finally:
            for task in list(self._jobs):
                task.cancel()

    async def _deliver(self, stream: str, message_id: str, fields: dict[str, str]) -> None:
        from redis.exceptions import RedisError

        try:
            target = DiscordChannel.model_validate_json(fields["target"])
            request = SpeechRequest.model_validate_json(fields["request"])
            result, _ = await self.speak(target, request)
        except Exception as exc:  # a malformed job: answered, never retried
            log.warning("discord relay: job %s failed: %s", fields.get("id"), exc)
            result = TargetResult(str(fields.get("target")), False, str(exc) or "bad job")
        reply = reply_of(self.prefix, str(fields.get("id")))
        try:
            await self.client.rpush(reply, json.dumps(asdict(result)))
            await self.client.expire(reply, REPLY_TTL_S)
            await self.client.xack(stream, GROUP, message_id)
        except (RedisError, OSError) as exc:
            log.warning("discord relay: answering job %s failed: %s", fields.get("id"), exc)
