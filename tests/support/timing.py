"""Providers and simulated servers that say *when* things happened, for time-to-first-audio
tests and the benchmark. Times are ``time.monotonic()``, the clock the simulated Discord voice
server stamps RTP packets with.

- :class:`TimedPiper`: the real local voice; records when each synthesis finished, per text.
  Register it in place of Piper: ``ProviderRegistry(settings, TIMED_PIPER)``.
- :class:`TimedTogether`: the simulated Together API; records when it sent each streamed event
  and when each stream ended.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from aiohttp import web

from bot.providers.base import SynthesisJob, Synthesized
from integrations import PROVIDERS
from integrations.piper import PiperProvider
from tests.fakes.together import FakeTogether

__all__ = ["TIMED_PIPER", "TimedPiper", "TimedTogether"]


class TimedPiper(PiperProvider):
    """Piper that logs ``(text, finished_at)`` for every synthesis in :attr:`finished`."""

    finished: ClassVar[list[tuple[str, float]]] = []

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        async for chunk in super().stream(job):
            yield chunk
        type(self).finished.append((job.text, time.monotonic()))


TIMED_PIPER: dict[str, str] = {**PROVIDERS, "piper": "tests.support.timing:TimedPiper"}


class TimedTogether(FakeTogether):
    """:class:`FakeTogether` logging the send time of every streamed event (:attr:`sent`) and
    the end of every stream (:attr:`ended`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sent: list[float] = []
        self.ended: list[float] = []

    async def _send(  # type: ignore[override]
        self, response: web.StreamResponse, event: Mapping[str, Any]
    ) -> None:
        await FakeTogether._send(response, event)
        self.sent.append(time.monotonic())

    async def _stream(self, *args: Any, **kwargs: Any) -> web.StreamResponse:
        try:
            return await super()._stream(*args, **kwargs)
        finally:
            self.ended.append(time.monotonic())
