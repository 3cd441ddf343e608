"""The command tree: the commands Discord is given, and its one error handler (Oyez's errors
become the ``⚠️`` reply, ephemeral while unanswered, else the deferred reply)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import discord
import pytest
from discord import app_commands

from bot.errors import InvalidRequest, ProviderError
from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.commands.errors import (
    MESSAGE_MAX_CHARS,
    OyezCommandTree,
    PaidProviderRefused,
    fit,
)
from integrations.discord.settings import DiscordSettings


class Response:
    def __init__(self, done: bool) -> None:
        self.done = done
        self.sent: list[tuple[str, bool]] = []

    def is_done(self) -> bool:
        return self.done

    async def send_message(self, content: str, *, ephemeral: bool = False) -> None:
        self.sent.append((content, ephemeral))


class Interaction:
    """What the handler uses of a ``discord.Interaction``."""

    def __init__(self, deferred: bool) -> None:
        self.response = Response(deferred)
        self.edits: list[str] = []
        self.command = None

    async def edit_original_response(self, *, content: str) -> None:
        self.edits.append(content)


@app_commands.command(name="probe", description="A command to fail")
async def probe(interaction: discord.Interaction) -> None:  # noqa: ARG001 - a discord.py command's signature
    raise AssertionError("not called")


async def handle(error: app_commands.AppCommandError, *, deferred: bool) -> Interaction:
    tree = OyezCommandTree(discord.Client(intents=discord.Intents.none()))
    interaction = Interaction(deferred)
    await tree.on_error(cast(Any, interaction), error)
    return interaction


async def test_our_errors_are_answered_ephemerally_before_a_defer() -> None:
    failed = app_commands.CommandInvokeError(probe, ProviderError("tone", "no tone today"))
    interaction = await handle(failed, deferred=False)
    assert interaction.response.sent == [(f"⚠️ {failed.original}", True)]
    assert interaction.edits == []


async def test_after_a_defer_the_reply_says_it() -> None:
    failed = app_commands.CommandInvokeError(probe, InvalidRequest("unknown voice 'b5'"))
    interaction = await handle(failed, deferred=True)
    assert interaction.edits == ["⚠️ unknown voice 'b5'"]
    assert interaction.response.sent == []
    refused = await handle(PaidProviderRefused("segmind"), deferred=False)
    ((content, ephemeral),) = refused.response.sent
    assert content.startswith("⚠️ segmind is a paid provider") and ephemeral


async def test_other_errors_are_logged_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    failed = app_commands.CommandInvokeError(probe, KeyError("bug"))
    with caplog.at_level(logging.ERROR):
        interaction = await handle(failed, deferred=False)
    assert interaction.response.sent == [] and interaction.edits == []
    assert "Ignoring exception" in caplog.text


async def test_the_commands_discord_sees_are_the_recorded_ones(tmp_path: Path) -> None:
    """Names, options, descriptions, permissions and autocomplete of every command, as synced
    (``data/commands.json``; regenerate it on purpose when a command changes)."""
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path))
    bot = OyezBot(pipeline, DiscordSettings())
    try:
        synced = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
    finally:
        await bot.close()
        await pipeline.aclose()
    recorded = json.loads((Path(__file__).parent / "data" / "commands.json").read_text())
    assert sorted(synced, key=lambda c: str(c["name"])) == recorded


def test_a_reply_too_long_for_discord_keeps_its_start_and_its_hint() -> None:
    error = f"⚠️ unknown voice '{'0' * 5000}'; allowed: en_US-joe-medium"
    fitted = fit(error)
    assert len(fitted) == MESSAGE_MAX_CHARS
    assert fitted.startswith("⚠️ unknown voice '000")
    assert fitted.endswith("'; allowed: en_US-joe-medium")
    assert fit("short") == "short"
