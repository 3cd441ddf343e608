"""pytest fixture: a running :class:`FakeDiscord` with discord.py's globals pointed at it.

Import it into a test module (``from tests.fakes.discord.fixtures import fake_discord``); the
globals (``Route.BASE``, ``DEFAULT_GATEWAY``) are restored when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.discord.client import patched_discord
from tests.fakes.discord.server import FakeDiscord

__all__ = ["fake_discord"]


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        with patched_discord(fake):
            yield fake
