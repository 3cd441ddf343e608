"""The guild player with texts spoken sentence by sentence and with streamed voices: one Opus
stream per item, started once enough is ready, cut cleanly. The voice output here takes one
packet every 20 ms on the event loop, as discord.py's sender does in its thread."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.audio.live import LiveUtterance
from bot.errors import ProviderError
from bot.speech import OutputProfile, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis.prepared import PreparedRequest, Segment
from integrations.discord.feed import OpusFeed
from integrations.discord.player import GuildPlayer, QueuedItem

VOICE = Voice("tone", "sine", "a4", "A4")


def page(packet: bytes, granule: int) -> bytes:
    """One Ogg page holding one packet (shorter than 255 bytes; no CRC: nothing checks it)."""
    return struct.pack("<4sBBqIIIB", b"OggS", 0, 0, granule, 1, 0, 0, 1) + bytes(
        [len(packet)]
    ) + packet  # fmt: skip


def ogg(packets: list[bytes]) -> bytes:
    head = b"OpusHead" + bytes([1, 2]) + (0).to_bytes(2, "little") + bytes(8)
    pages = [page(head, 0), page(b"OpusTags" + bytes(8), 0)]
    pages += [page(p, 960 * (i + 1)) for i, p in enumerate(packets)]
    return b"".join(pages)


def utterance(text: str, packets: int = 5) -> Utterance:
    audio = ogg([f"{text}:{i}".encode() for i in range(packets)])
    return Utterance(
        "r", text, audio, OutputProfile.OGG_OPUS, 48_000, 2, packets * 0.02, VOICE, Timings(0, 0, 0)
    )


class FeedOutput:
    """Takes a packet every 20 ms (silence when none is there), like discord.py's sender."""

    def __init__(self) -> None:
        self.heard: list[bytes] = []
        self.whole: list[bytes] = []
        self.started_with: list[float] = []  # seconds of audio in the feed at each start
        self._task: asyncio.Task[None] | None = None
        self._done: Callable[[Exception | None], None] | None = None

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        self.whole.append(ogg_opus)
        asyncio.get_running_loop().call_later(0.05, done, None)

    def play_feed(self, feed: OpusFeed, done: Callable[[Exception | None], None]) -> None:
        self.started_with.append(feed.fed_s)
        self._done = done
        self._task = asyncio.create_task(self._send(feed))

    async def _send(self, feed: OpusFeed) -> None:
        while (packet := feed.get(0)) != b"":
            self.heard.append(packet if packet is not None else b"silence")
            await asyncio.sleep(0.02)
        self._finish()

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(None)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._finish()

    def is_connected(self) -> bool:
        return True


Reports = list[tuple[Utterance | None, BaseException | None]]


def player_for(
    segments: Callable[[SpeechRequest], AsyncIterator[Segment]], reports: Reports, **kw: Any
) -> tuple[GuildPlayer, FeedOutput]:
    async def on_done(item: QueuedItem, spoken: Utterance | None, error: Any) -> None:  # noqa: ARG001 - GuildPlayer's on_done signature
        reports.append((spoken, error))

    def any_request(request: SpeechRequest | PreparedRequest) -> AsyncIterator[Segment]:
        return segments(request.request if isinstance(request, PreparedRequest) else request)

    output = FeedOutput()
    return GuildPlayer(output, any_request, on_done=on_done, **kw), output


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - watching a test double
            await asyncio.sleep(0.01)


async def test_sentences_play_as_one_stream_and_are_reported_once() -> None:
    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:  # noqa: ARG001 - the Segments signature
        for i, text in enumerate(("One.", "Two.", "Three.")):
            await asyncio.sleep(0.03)
            yield Segment(i, 3, utterance(text))

    reports: Reports = []
    player, output = player_for(segments, reports)
    player.enqueue(SpeechRequest(text="One. Two. Three."))
    await until(lambda: reports)
    await player.close()
    expected = [f"{t}:{i}".encode() for t in ("One.", "Two.", "Three.") for i in range(5)]
    assert output.heard == expected  # in order, back to back, no silence
    assert output.whole == []
    ((spoken, error),) = reports
    assert error is None
    assert spoken is not None
    assert spoken.text == "One. Two. Three."
    assert spoken.duration_s == pytest.approx(0.3)


async def test_late_frames_are_sent_as_silence_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:  # noqa: ARG001 - the Segments signature
        yield Segment(0, 2, utterance("One."))
        await asyncio.sleep(0.2)  # the second sentence comes 0.1 s after the first has played
        yield Segment(1, 2, utterance("Two."))

    caplog.set_level(logging.INFO, logger="integrations.discord.player")
    reports: Reports = []
    player, output = player_for(segments, reports, start_s=0.0)
    player.enqueue(SpeechRequest(text="One. Two."))
    await until(lambda: reports)
    await player.close()
    late = output.heard.count(b"silence")
    assert late > 0
    assert [p for p in output.heard if p != b"silence"] == [
        f"{t}:{i}".encode() for t in ("One.", "Two.") for i in range(5)
    ]
    assert f"{late} late frames sent as silence" in caplog.text


async def test_one_whole_sentence_is_played_as_a_file() -> None:
    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:  # noqa: ARG001 - the Segments signature
        yield Segment(0, 1, utterance("Hello."))

    reports: Reports = []
    player, output = player_for(segments, reports)
    player.enqueue(SpeechRequest(text="Hello."))
    await until(lambda: reports)
    await player.close()
    assert output.whole == [utterance("Hello.").audio]
    assert output.heard == []


async def test_a_stream_starts_once_start_s_of_it_is_encoded() -> None:
    async def stream(live: LiveUtterance) -> Utterance:
        for i in range(40):  # 0.8 s of audio, as fast as it plays
            live.put(f"live:{i}".encode())
            await asyncio.sleep(0.02)
        return utterance("live", 40)

    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:
        live = LiveUtterance(request.id, request.text, VOICE)
        live.attach(asyncio.create_task(stream(live)))
        yield Segment(0, 1, live)

    reports: Reports = []
    player, output = player_for(segments, reports, start_s=0.2)
    player.enqueue(SpeechRequest(text="Streamed."))
    await until(lambda: reports)
    await player.close()
    (started,) = output.started_with
    assert started == pytest.approx(0.2, abs=0.021)  # not before, and not the whole
    assert [p for p in output.heard if p != b"silence"] == [f"live:{i}".encode() for i in range(40)]
    assert reports[0][0] is not None
    assert reports[0][1] is None


async def test_skip_cuts_a_long_text_and_stops_making_it() -> None:
    made: list[int] = []
    closed = asyncio.Event()

    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:  # noqa: ARG001 - the Segments signature
        try:
            for i in range(50):
                await asyncio.sleep(0.05)
                made.append(i)
                yield Segment(i, 50, utterance(f"S{i}", 10))
        finally:
            closed.set()

    reports: Reports = []
    player, output = player_for(segments, reports)
    player.enqueue(SpeechRequest(text="A very long text."))
    await until(lambda: len(output.heard) > 5)
    assert player.skip()
    await until(lambda: reports)
    await asyncio.wait_for(closed.wait(), 1)  # what was under way stopped
    await asyncio.sleep(0.3)
    assert len(made) < 10  # nowhere near the 50 sentences
    heard = len(output.heard)
    await asyncio.sleep(0.2)
    assert len(output.heard) == heard  # and nothing more is played
    await player.close()


async def test_a_failing_sentence_ends_the_item_after_the_ones_before_it() -> None:
    async def segments(request: SpeechRequest) -> AsyncIterator[Segment]:
        if "Broken" not in request.text:
            yield Segment(0, 1, utterance(request.text))
            return
        yield Segment(0, 3, utterance("Fine."))
        await asyncio.sleep(0.01)
        raise ProviderError("tone", "the tone generator is broken")

    reports: Reports = []
    player, output = player_for(segments, reports)
    player.enqueue(SpeechRequest(text="Fine. Broken. Never."))
    player.enqueue(SpeechRequest(text="Next one."))
    await until(lambda: len(reports) == 2)
    await player.close()
    assert output.heard[:5] == [f"Fine.:{i}".encode() for i in range(5)]
    spoken, error = reports[0]
    assert isinstance(error, ProviderError)
    assert spoken is not None
    assert spoken.text == "Fine."  # what was said before it broke
    assert reports[1][1] is None  # the queue went on
