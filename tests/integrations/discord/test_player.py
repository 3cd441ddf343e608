"""The per-guild queue and player, against a voice output that records what it played
(on a fast-forwarded clock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.errors import RequestExpired
from bot.speech import Priority, SpeechRequest, Utterance
from integrations.discord.player import (
    CLOSED,
    PLAY_MARGIN_S,
    SKIPPED,
    STOPPED,
    GuildPlayer,
    QueuedItem,
    Skipped,
)
from tests.support.player import RecordingOutput, Speaker, now


async def settle(output: RecordingOutput, count: int) -> None:
    while len([p for p in output.played if p[2] is not None]) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


@pytest.mark.looptime
async def test_items_play_in_order_without_overlap() -> None:
    output, speaker = RecordingOutput(), Speaker()
    player = GuildPlayer(output, speaker.segments)
    for text in ("one two", "three four five", "six"):
        player.enqueue(SpeechRequest(text=text))
    await settle(output, 3)
    await player.close()
    assert [p[0] for p in output.played] == ["one two", "three four five", "six"]
    ends = [p[2] for p in output.played]
    starts = [p[1] for p in output.played]
    for end, following in zip(ends, starts[1:], strict=False):
        assert end is not None
        assert following >= end  # no overlap
        assert following - end < 0.01  # prefetched: no gap either


@pytest.mark.looptime
async def test_prefetch_is_bounded() -> None:
    output, speaker = RecordingOutput(), Speaker()
    player = GuildPlayer(output, speaker.segments, prefetch=1)
    for text in ("a b c d", "e", "f", "g"):
        player.enqueue(SpeechRequest(text=text))
    await asyncio.sleep(1.0)  # the first plays (4 s): the second is made, not the third
    assert set(speaker.started) == {"a b c d", "e"}
    await settle(output, 4)
    await player.close()


@pytest.mark.looptime
async def test_high_priority_goes_first_but_never_cuts_in() -> None:
    output, speaker = RecordingOutput(), Speaker()
    player = GuildPlayer(output, speaker.segments)
    player.enqueue(SpeechRequest(text="first one playing"))
    await asyncio.sleep(1)
    player.enqueue(SpeechRequest(text="normal"))
    position = player.enqueue(SpeechRequest(text="urgent", priority=Priority.HIGH))
    assert position == 1  # after the one playing, before the normal one
    await settle(output, 3)
    await player.close()
    assert [p[0] for p in output.played] == ["first one playing", "urgent", "normal"]


@pytest.mark.looptime
async def test_skip_cuts_the_current_one() -> None:
    output, speaker = RecordingOutput(), Speaker()
    player = GuildPlayer(output, speaker.segments)
    player.enqueue(SpeechRequest(text="a very long announcement that goes on"))
    player.enqueue(SpeechRequest(text="next"))
    await asyncio.sleep(2)
    assert player.skip()
    await settle(output, 2)
    await player.close()
    (_, start, end), following = output.played[0], output.played[1]
    assert end is not None
    assert end - start == pytest.approx(1.5, abs=0.1)  # cut, not the full 7 s
    assert following[0] == "next"


class Reports:
    """The player's ``on_done``: each item's text, whether it was said, its error, and when."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bool, BaseException | None, float]] = []

    async def __call__(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        self.got.append((item.request.text, utterance is not None, error, now()))


@pytest.mark.looptime
async def test_skip_while_the_current_one_is_still_being_made() -> None:
    """A skip before the current item's audio is ready: it is never played, its report says
    so at once (a synthesis waiting out a rate limit does not hold the queue up), the next
    one plays."""
    output, reports = RecordingOutput(), Reports()
    player = GuildPlayer(output, Speaker(synthesis_s=30).segments, on_done=reports, prefetch=0)
    player.enqueue(SpeechRequest(text="slow to make"))
    player.enqueue(SpeechRequest(text="next"))
    await asyncio.sleep(1)
    assert output.played == []
    assert player.skip()
    await asyncio.sleep(0.01)
    (text, said, error, at), *_ = reports.got
    assert (text, said) == ("slow to make", False)
    assert isinstance(error, Skipped)
    assert str(error) == SKIPPED
    assert at == pytest.approx(1.0, abs=0.01)
    await settle(output, 1)
    await player.close()
    assert [p[0] for p in output.played] == ["next"]


@pytest.mark.looptime
async def test_stop_reports_what_it_dropped() -> None:
    output, reports = RecordingOutput(), Reports()
    player = GuildPlayer(output, Speaker(synthesis_s=30).segments, on_done=reports)
    for text in ("one", "two", "three"):
        player.enqueue(SpeechRequest(text=text))
    await asyncio.sleep(1)  # all three are being made
    assert player.stop() == 2
    await asyncio.sleep(0.1)
    assert sorted((t, said, str(e)) for t, said, e, _ in reports.got) == [
        ("one", False, STOPPED),
        ("three", False, STOPPED),
        ("two", False, STOPPED),
    ]
    assert all(isinstance(e, Skipped) for *_, e, _ in reports.got)
    player.enqueue(SpeechRequest(text="four"))
    await asyncio.sleep(0.1)
    await player.close()
    assert reports.got[-1][:2] == ("four", False)
    assert str(reports.got[-1][2]) == CLOSED
    assert output.played == []


@pytest.mark.looptime
async def test_stop_empties_the_queue() -> None:
    output, speaker = RecordingOutput(), Speaker()
    player = GuildPlayer(output, speaker.segments)
    for text in ("one two three", "four", "five"):
        player.enqueue(SpeechRequest(text=text))
    await asyncio.sleep(1)
    assert player.stop() == 2
    await asyncio.sleep(10)
    await player.close()
    assert [p[0] for p in output.played] == ["one two three"]
    assert player.pending() == []


@pytest.mark.looptime
async def test_expired_while_queued_is_dropped_and_reported() -> None:
    output, speaker = RecordingOutput(), Speaker()
    reports: list[tuple[str, Any]] = []

    async def on_done(item: QueuedItem, utterance: Utterance | None, error: Any) -> None:  # noqa: ARG001 - GuildPlayer's on_done signature
        reports.append((item.request.text, error))

    player = GuildPlayer(output, speaker.segments, on_done=on_done)
    player.enqueue(SpeechRequest(text="one two three four five six"))
    soon = datetime.now(UTC) + timedelta(milliseconds=1)
    player.enqueue(SpeechRequest(text="stale", expires_at=soon))
    await settle(output, 1)
    await asyncio.sleep(1)
    await player.close()
    assert [p[0] for p in output.played] == ["one two three four five six"]
    assert reports[1][0] == "stale"
    assert isinstance(reports[1][1], RequestExpired)


@pytest.mark.looptime
async def test_idle_leaves_after_the_timeout() -> None:
    output, speaker = RecordingOutput(), Speaker()
    left: list[float] = []

    async def on_idle() -> None:
        left.append(now())

    start = now()
    player = GuildPlayer(output, speaker.segments, idle_timeout_s=300, on_idle=on_idle)
    player.enqueue(SpeechRequest(text="hello"))
    await settle(output, 1)
    await asyncio.sleep(400)
    await player.close()
    assert len(left) == 1
    assert left[0] - start == pytest.approx(0.5 + 1 + 300, abs=0.2)


@pytest.mark.looptime
async def test_a_stuck_playback_is_cut() -> None:
    output, speaker = RecordingOutput(stuck=True), Speaker()
    player = GuildPlayer(output, speaker.segments)
    player.enqueue(SpeechRequest(text="one two"))
    player.enqueue(SpeechRequest(text="three"))
    await asyncio.sleep(2 + PLAY_MARGIN_S + 1)
    await player.close()
    assert [p[0] for p in output.played] == ["one two", "three"]
    assert output.played[1][1] - output.played[0][1] == pytest.approx(2 + PLAY_MARGIN_S, abs=0.1)


@pytest.mark.looptime
async def test_on_idle_may_close_the_player() -> None:
    """The bot leaves the channel when idle by closing the player from its own callback."""
    output, speaker = RecordingOutput(), Speaker()
    closed: list[float] = []
    player: GuildPlayer | None = None

    async def on_idle() -> None:
        assert player is not None
        await player.close()
        closed.append(now())

    player = GuildPlayer(output, speaker.segments, idle_timeout_s=10, on_idle=on_idle)
    player.enqueue(SpeechRequest(text="hello"))
    await asyncio.sleep(30)
    assert closed  # no "task cannot await itself"
    assert player._task.done()


@pytest.mark.looptime
async def test_queue_depth_and_time_to_first_audio_are_measured() -> None:
    from bot.ops.metrics import QUEUE_DEPTH, TIME_TO_FIRST_AUDIO

    def observed() -> float:
        histogram = TIME_TO_FIRST_AUDIO.labels(sink="discord")
        return next(
            s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count")
        )

    def depth() -> float:
        return next(s.value for m in QUEUE_DEPTH.collect() for s in m.samples)

    before = observed()
    output = RecordingOutput()
    player = GuildPlayer(output, Speaker().segments, prefetch=0)
    try:
        player.enqueue(SpeechRequest(text="one two"))
        player.enqueue(SpeechRequest(text="three"))
        player.enqueue(SpeechRequest(text="four"))
        await asyncio.sleep(1)  # the first plays, two wait
        assert depth() >= 2
        await asyncio.sleep(10)
        assert [text for text, _, _ in output.played] == ["one two", "three", "four"]
        assert observed() == before + 3
    finally:
        await player.close()
