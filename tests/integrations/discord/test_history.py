"""``/history``: what was said in the server lately, newest first, who asked and in which
voice; what failed says why. End to end on the simulated Discord, and the listing's limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ProviderUnavailable
from bot.ops import config
from bot.speech import SpeechRequest
from integrations.discord.bot import OyezBot
from integrations.discord.commands.errors import MESSAGE_MAX_CHARS
from integrations.discord.history import HISTORY_SIZE, SpokenHistory
from integrations.discord.player import QueuedItem
from tests.fakes.discord import ALICE, BOT, GUILD_ID, VOICE_CHANNEL_ID, FakeDiscord
from tests.fakes.discord.client import patched_discord
from tests.fakes.discord.fixtures import oyez_bot_running


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(members=[ALICE, BOT], voice_states={ALICE.id: VOICE_CHANNEL_ID}) as f:
        with patched_discord(f):
            yield f


@pytest.fixture
async def oyez(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[OyezBot]:  # noqa: ARG001 - patches discord.py in
    async with oyez_bot_running(config.load(data_dir=tmp_path / "data")) as client:
        yield client


async def say(fake: FakeDiscord, text: str) -> None:
    sent = await fake.send_interaction("say", {"text": text})
    await fake.wait_for(
        lambda: [f for f in fake.followups_to(sent) if f.content and "Said:" in f.content],
        timeout_s=60,
        what="the reply once said",
    )


@pytest.mark.usefixtures("oyez")
async def test_history_lists_what_was_said_newest_first(fake: FakeDiscord) -> None:
    sent = await fake.send_interaction("history", {})
    empty = await fake.wait_for_response(sent)
    assert empty.ephemeral
    assert "Nothing has been said" in str(empty.data["content"])
    await say(fake, "The bins go out tonight.")
    await say(fake, "Dinner is at seven.")
    sent = await fake.send_interaction("history", {})
    response = await fake.wait_for_response(sent)
    assert response.ephemeral
    lines = str(response.data["content"]).splitlines()
    assert lines[0] == "The last 2 said here, newest first:"
    pattern = r"<t:\d+:R> (.+) — Alice · piper/en_US-joe-medium"
    assert [re.fullmatch(pattern, line) is not None for line in lines[1:]] == [True, True]
    assert "Dinner is at seven." in lines[1]
    assert "The bins go out tonight." in lines[2]


def item(text: str, label: str = "Alice") -> QueuedItem:
    return QueuedItem(0, (0.0, 0), SpeechRequest(text=text), label)


def test_a_failure_says_why_and_the_listing_fits_one_message() -> None:
    history = SpokenHistory()
    history.record(1, item("Hello."), None, ProviderUnavailable("together", "HTTP 503"))
    (line,) = history.listing(1).splitlines()[1:]
    assert line.endswith("Hello. — Alice · ⚠️ not said: together: HTTP 503")
    for n in range(HISTORY_SIZE + 5):
        history.record(1, item(f"{n} " + "word " * 60), None, None)
    assert len(history.recent(1)) == HISTORY_SIZE  # the oldest forgotten
    listing = history.listing(1)
    assert len(listing) <= MESSAGE_MAX_CHARS
    shown = listing.splitlines()
    assert shown[0] == f"The last {len(shown) - 1} said here, newest first:"
    assert shown[1].split("> ", 1)[1].startswith(f"{HISTORY_SIZE + 4} word")  # the newest
    assert shown[1].split(" — ")[0].endswith("…")  # a long text cut
    assert history.recent(int(GUILD_ID)) == []  # per server
