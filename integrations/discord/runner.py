"""Running the Discord bot for ``oyez run``."""

from __future__ import annotations

import logging

import discord
import yarl

from bot.pipeline import SpeechPipeline
from integrations.discord.bot import DiscordSettings, OyezBot

__all__ = ["run_discord"]

log = logging.getLogger(__name__)


async def run_discord(pipeline: SpeechPipeline, settings: DiscordSettings) -> None:
    """Connect and serve until cancelled. The token is never logged.

    ``api_base_url`` and ``gateway_url`` point discord.py at a REST or gateway proxy (large
    deployments); TLS uses the system's trust store (``SSL_CERT_FILE`` works), never unchecked.
    """
    assert settings.token is not None
    discord.http.Route.BASE = str(settings.api_base_url).rstrip("/")
    if settings.gateway_url is not None:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(settings.gateway_url))
    bot = OyezBot(pipeline, settings)
    try:
        log.info("discord: connecting (commands sync %s)", settings.sync_guilds or "globally")
        await bot.start(settings.token.get_secret_value())
    finally:
        await bot.close()
