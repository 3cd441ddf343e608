"""A fake voice output and a fake pipeline for the guild player's tests, on the loop's clock
(fast-forwarded by looptime)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from bot.speech import OutputProfile, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis.prepared import PreparedRequest, Segment
from integrations.discord.feed import OpusFeed

VOICE = Voice("tone", "sine", "a4", "A4")


def now() -> float:
    return asyncio.get_running_loop().time()


class RecordingOutput:
    """Plays for the utterance's length (its duration is encoded in the bytes), records it."""

    def __init__(self, stuck: bool = False) -> None:
        self.played: list[tuple[str, float, float | None]] = []  # (text, start, end)
        self.stuck = stuck
        self._done: Callable[[Exception | None], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        text, seconds = ogg_opus.decode().rsplit("|", 1)
        self.played.append((text, now(), None))
        self._done = done
        if not self.stuck:
            self._timer = asyncio.get_running_loop().call_later(float(seconds), self._finish)

    def play_feed(self, feed: OpusFeed, done: Callable[[Exception | None], None]) -> None:  # noqa: ARG002 - the VoiceOutput protocol
        raise AssertionError("each text is one sentence made whole: it plays as a file")

    def _finish(self) -> None:
        text, start, _ = self.played[-1]
        self.played[-1] = (text, start, now())
        if self._done is not None:
            done, self._done = self._done, None
            done(None)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._done is not None:
            self._finish()

    def is_connected(self) -> bool:
        return True


class Speaker:
    """A fake pipeline: each utterance lasts as many seconds as its text has words.

    :meth:`segments` is the player's ``segments``: each text one sentence, made whole.
    """

    def __init__(self, synthesis_s: float = 0.5) -> None:
        self.started: dict[str, float] = {}
        self.synthesis_s = synthesis_s

    async def __call__(self, request: SpeechRequest) -> Utterance:
        self.started[request.text] = now()
        await asyncio.sleep(self.synthesis_s)
        seconds = float(len(request.text.split()))
        return Utterance(
            request.id,
            request.text,
            f"{request.text}|{seconds}".encode(),
            OutputProfile.OGG_OPUS,
            48_000,
            2,
            seconds,
            VOICE,
            Timings(self.synthesis_s, 0.0, self.synthesis_s),
        )

    async def segments(self, request: SpeechRequest | PreparedRequest) -> AsyncIterator[Segment]:
        plain = request.request if isinstance(request, PreparedRequest) else request
        yield Segment(0, 1, await self(plain))
