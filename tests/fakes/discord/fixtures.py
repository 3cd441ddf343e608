"""pytest fixtures: a running :class:`FakeDiscord` with discord.py's globals pointed at it, and
Oyez's bot connected to it.

Import them into a test module (``from tests.fakes.discord.fixtures import fake_discord``); the
globals (``Route.BASE``, ``DEFAULT_GATEWAY``) are restored when the test ends.
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

__all__ = ["fake_discord", "oyez_bot", "oyez_bot_running"]


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
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
