"""A paid provider whose answers a test scripts: proves the dispatcher's behaviour exactly."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import ClassVar

from bot.errors import ProviderError
from bot.ops.config import LimitSettings
from bot.providers.base import Provider, SynthesisJob, Synthesized, Usage
from bot.speech import AudioChunk, AudioEncoding, Voice


class ScriptedProvider(Provider):
    """Each call takes the next scripted outcome: an exception to raise, or None for audio.

    ``calls`` records the event-loop time of every call that reached the provider.
    """

    kind = "scripted"
    paid = True
    default_limits = LimitSettings()
    script: ClassVar[deque[ProviderError | None]] = deque()
    calls: ClassVar[list[float]] = []
    cost_usd: ClassVar[float | None] = 0.02
    latency_s: ClassVar[float] = 0.0

    async def list_voices(self) -> list[Voice]:
        return [Voice(self.name, "m1", "v1", "Scripted voice", "en")]

    def default_voice_id(self) -> str:
        return "v1"

    def estimated_cost(self, voice: Voice) -> float | None:  # noqa: ARG002 - a Provider method
        return self.cost_usd

    async def synthesize(self, job: SynthesisJob) -> Synthesized:  # noqa: ARG002 - a Provider method
        type(self).calls.append(asyncio.get_running_loop().time())
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome
        chunk = AudioChunk(b"\x00\x10" * 1600, AudioEncoding.PCM_S16LE, 16_000, 1)
        return Synthesized(chunk, Usage(cost_usd=self.cost_usd))
