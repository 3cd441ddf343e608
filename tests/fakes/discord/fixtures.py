"""pytest fixtures: a running :class:`FakeDiscord` with discord.py's globals pointed at it, and
Oyez's bot connected to it.

Import them into a test module (``from tests.fakes.discord.fixtures import fake_discord``); the
globals (``Route.BASE``, ``DEFAULT_GATEWAY``) are restored when the test ends. The voice server
declines DAVE unless the test is parametrized with :data:`DAVE_ON` (DAVE only) or
:data:`DAVE_BOTH` (once without, once with end-to-end encryption).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.ops import config
from bot.ops.config import Settings
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.settings import DiscordSettings
from tests.fakes.discord.client import client_options, patched_discord, running
from tests.fakes.discord.server import FakeDiscord

__all__ = ["DAVE_BOTH", "DAVE_ON", "fake_discord", "oyez_bot", "oyez_bot_running"]

#: Run a test with DAVE end-to-end encryption on (the voice server offers protocol version 1).
DAVE_ON = pytest.mark.parametrize("fake_discord", [True], indirect=True, ids=["dave"])
#: Run a test twice: DAVE declined (version 0), then on.
DAVE_BOTH = pytest.mark.parametrize(
    "fake_discord", [False, True], indirect=True, ids=["plain", "dave"]
)


@pytest.fixture
async def fake_discord(request: pytest.FixtureRequest) -> AsyncIterator[FakeDiscord]:
    """The simulated Discord; DAVE on when indirectly parametrized with ``True``."""
    async with FakeDiscord(dave=bool(getattr(request, "param", False))) as fake:
        with patched_discord(fake):
            yield fake


@asynccontextmanager
async def oyez_bot_running(settings: Settings) -> AsyncIterator[OyezBot]:
    """Oyez's bot (idle timeout 60 s) on its own pipeline, connected to the fake Discord (inside
    :func:`~tests.fakes.discord.client.patched_discord`)."""
    pipeline = SpeechPipeline(settings)
    client = OyezBot(pipeline, DiscordSettings(idle_timeout_s=60), **client_options())
    try:
        async with running(client):
            yield client
    finally:
        await pipeline.aclose()


@pytest.fixture
async def oyez_bot(
    fake_discord: FakeDiscord,  # noqa: ARG001 - requested to patch discord.py in
    tmp_path: Path,
) -> AsyncIterator[OyezBot]:
    async with oyez_bot_running(config.load(data_dir=tmp_path / "data")) as client:
        yield client
