"""Async pytest fixtures: each serves a fake with its defaults on 127.0.0.1 for one test.

Tests that need other settings build their own: ``async with FakeSegmind(credits=0.05) as fake:``;
most settings are also plain attributes a test may change on a running fixture (``credits``,
``sync_response``, ``chunk_delay``, ``limiter.limit``...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.openai_speech import FakeOpenAISpeech
from tests.fakes.segmind import FakeSegmind
from tests.fakes.together import FakeTogether

__all__ = ["fake_openai", "fake_segmind", "fake_together"]


@pytest.fixture
async def fake_segmind() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind() as fake:
        yield fake


@pytest.fixture
async def fake_together() -> AsyncIterator[FakeTogether]:
    async with FakeTogether() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAISpeech]:
    async with FakeOpenAISpeech() as fake:
        yield fake
