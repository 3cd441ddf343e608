"""The guild player while its voice connection is down (on a fast-forwarded clock): an item
waits for the reconnect; one that cannot be played is reported and the queue goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bot.speech import SpeechRequest, Utterance
from integrations.discord.player import RECONNECT_WAIT_S, GuildPlayer, QueuedItem
from tests.support.player import RecordingOutput, Speaker, now


class DroppedOutput(RecordingOutput):
    """Not connected until ``back_at`` (loop time, seconds); playing meanwhile raises, as
    discord.py's ``VoiceClient.play`` does ("Not connected to voice.")."""

    def __init__(self, back_at: float) -> None:
        super().__init__()
        self.back_at = back_at

    def is_connected(self) -> bool:
        return now() >= self.back_at

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        if not self.is_connected():
            raise RuntimeError("Not connected to voice.")
        super().play_opus(ogg_opus, done)


Reports = list[tuple[str, BaseException | None]]


def recorder(
    reports: Reports,
) -> Callable[[QueuedItem, Utterance | None, BaseException | None], Awaitable[None]]:
    async def on_done(
        item: QueuedItem,
        utterance: Utterance | None,  # noqa: ARG001 - GuildPlayer's on_done signature
        error: BaseException | None,
    ) -> None:
        reports.append((item.request.text, error))

    return on_done


async def reported(reports: Reports, count: int) -> None:
    async with asyncio.timeout(120):  # loop time
        while len(reports) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.looptime
async def test_an_item_waits_for_the_connection_to_come_back() -> None:
    output = DroppedOutput(back_at=now() + 5)
    reports: Reports = []
    player = GuildPlayer(output, Speaker().segments, on_done=recorder(reports))
    player.enqueue(SpeechRequest(text="one two"))
    await reported(reports, 1)
    await player.close()
    ((text, start, _),) = output.played
    assert text == "one two" and start >= output.back_at
    assert reports == [("one two", None)]


@pytest.mark.looptime
async def test_a_connection_that_stays_down_fails_the_item_not_the_queue() -> None:
    start = now()
    output = DroppedOutput(back_at=start + RECONNECT_WAIT_S + 15)
    reports: Reports = []
    player = GuildPlayer(output, Speaker().segments, on_done=recorder(reports))
    player.enqueue(SpeechRequest(text="lost"))
    await asyncio.sleep(RECONNECT_WAIT_S + 5)
    ((text, error),) = reports
    assert text == "lost" and "Not connected" in str(error)
    player.enqueue(SpeechRequest(text="found again"))  # the player still runs
    await reported(reports, 2)
    await player.close()
    assert reports[1] == ("found again", None)
    assert [p[0] for p in output.played] == ["found again"]
    assert output.played[0][1] >= output.back_at
