"""The one recording announcement sink of the tests (``bot.announce.announcer.Sink``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from bot.announce.model import Announcement, Target, TargetResult
from bot.errors import RequestExpired
from bot.speech import OutputProfile, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis.prepared import PreparedRequest


def utterance(request: SpeechRequest) -> Utterance:
    """A 1.5 s stand-in utterance for ``request`` (its audio is not real)."""
    return Utterance(
        request_id=request.id,
        text=request.text,
        audio=b"audio",
        profile=request.output,
        sample_rate=44_100,
        channels=2,
        duration_s=1.5,
        voice=Voice("piper", "en_US-joe-medium", "en_US-joe-medium", "joe"),
        timings=Timings(0.1, 0.1, 0.2),
    )


class RecordingSink:
    """A media-player sink that records what it was given, and when (on ``clock``).

    ``delivered``: (target names, request) per delivery; ``heard``: (time, text) per delivery;
    ``arrived`` is set at every delivery. ``fail`` maps a target to its error; ``expire`` fails
    every target as expired; ``crash`` is raised instead of delivering. ``audio=False`` reports
    no utterance, as a sink does when nothing played.
    """

    kind: ClassVar[str] = "media_player"
    profile = OutputProfile.MP3

    def __init__(self, clock: Callable[[], float] = time.time, *, audio: bool = True) -> None:
        self.clock = clock
        self.audio = audio
        self.delivered: list[tuple[list[str], SpeechRequest]] = []
        #: What the announcer prepared for each delivery (None: it has no pipeline).
        self.prepared: list[PreparedRequest | None] = []
        self.heard: list[tuple[datetime, str]] = []
        self.arrived = asyncio.Event()
        self.fail: dict[str, str] = {}
        self.expire = False
        self.crash: Exception | None = None

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,  # noqa: ARG002 - the Sink protocol
        prepared: PreparedRequest | None = None,
    ) -> tuple[list[TargetResult], Utterance | None]:
        if self.crash is not None:
            raise self.crash
        names = [str(t) for t in targets]
        self.delivered.append((names, request))
        self.prepared.append(prepared)
        self.heard.append((datetime.fromtimestamp(self.clock(), UTC), request.text))
        self.arrived.set()
        if self.expire:
            error = str(RequestExpired(request.id, 1.0, "after synthesis"))
            return [TargetResult(n, False, error, expired=True) for n in names], None
        results = [
            TargetResult(n, False, self.fail[n]) if n in self.fail else TargetResult(n, True)
            for n in names
        ]
        return results, utterance(request) if self.audio else None


class DiscordRecordingSink(RecordingSink):
    """The same, for Discord targets."""

    kind: ClassVar[str] = "discord"
    profile = OutputProfile.OGG_OPUS
