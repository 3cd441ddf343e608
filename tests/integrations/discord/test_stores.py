"""The Discord stores (guild settings, voice choices) wait for a busy SQLite file in a worker
thread: another process writing (``oyez schedule add``) must not stall the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bot.ops.store import open_state
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.preferences import Preferences, VoiceChoice


async def loop_runs_while(write: Callable[[], Coroutine[Any, Any, None]], data_dir: Path) -> None:
    """Hold the state file's write lock from another connection while ``write`` runs: the
    event loop keeps ticking, and ``write`` completes once the lock is released."""
    other = open_state(data_dir, "")
    other.execute("BEGIN IMMEDIATE")  # what a writer in another process holds
    try:
        writing = asyncio.create_task(write())
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 10
        assert not writing.done()  # waiting for the lock, off the loop
    finally:
        other.execute("COMMIT")
        other.close()
    async with asyncio.timeout(5):
        await writing


async def test_guild_settings_wait_for_a_busy_file_off_the_event_loop(tmp_path: Path) -> None:
    store = GuildSettingsStore(tmp_path)
    try:
        await loop_runs_while(lambda: store.put(7, GuildSettings(voice="alba")), tmp_path)
        assert (await store.get(7)).voice == "alba"
    finally:
        await store.close()


async def test_voice_choices_wait_for_a_busy_file_off_the_event_loop(tmp_path: Path) -> None:
    store = Preferences(tmp_path)
    choice = VoiceChoice("piper", "en_GB-alba-medium", "en_GB-alba-medium")
    try:
        await loop_runs_while(lambda: store.set_voice(42, choice), tmp_path)
        assert await store.voice_of(42) == choice
    finally:
        await store.close()
