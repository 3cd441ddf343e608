"""The voice catalogue: every usable provider's voices, for ``/voices`` and autocomplete.

An autocomplete choice's value is ``provider|model|id`` (:func:`parse_voice` reads it back); a
named voice (``voices`` in the configuration) is offered by its name.
"""

from __future__ import annotations

import asyncio
import logging

from discord import app_commands

from bot.errors import ConfigError, InvalidRequest, OyezError
from bot.ops.config import NamedVoice
from bot.providers.base import Provider
from bot.speech import Voice
from bot.synthesis.pipeline import SpeechPipeline

__all__ = ["VoiceCatalogue", "parse_voice"]

#: Seconds a provider has to list its voices before it is left out.
LIST_TIMEOUT_S = 2.0
#: Most choices Discord shows for an autocomplete.
MAX_CHOICES = 25

log = logging.getLogger(__name__)


def parse_voice(
    value: str | None, provider: str | None
) -> tuple[str | None, str | None, str | None]:
    """(provider, model, voice) from an autocomplete value ``provider|model|id`` or a plain
    voice id or name (with ``provider`` as given)."""
    if value is not None and value.count("|") == 2:
        chosen_provider, model, voice = value.split("|")
        return chosen_provider, model, voice
    return provider, None, value


class VoiceCatalogue:
    """The voices ``pipeline``'s providers offer, and the configured named voices."""

    def __init__(self, pipeline: SpeechPipeline) -> None:
        self.pipeline = pipeline

    def named_voices(self) -> list[tuple[str, NamedVoice]]:
        return sorted(self.pipeline.settings.voices.items())

    async def voices(self, only: str | None = None) -> list[Voice]:
        """Voices of every usable provider (or of ``only``); a provider that is not
        configured, or cannot answer within :data:`LIST_TIMEOUT_S`, is left out."""
        registry = self.pipeline.registry
        names = [only] if only else registry.names()
        providers = []
        for name in names:
            try:
                provider = registry.get(name)
            except (InvalidRequest, ConfigError):
                continue
            if provider.configuration_problem() is None:
                providers.append(provider)
        results = await asyncio.gather(*(_listed(p) for p in providers))
        return [voice for voices in results for voice in voices]

    async def choices(self, current: str) -> list[app_commands.Choice[str]]:
        """Up to 25 voices matching what is typed, named voices first (Discord's limit)."""
        wanted = current.casefold().strip()
        choices = [
            app_commands.Choice(name=f"{name} — named voice ({nv.provider})"[:100], value=name)
            for name, nv in self.named_voices()
            if wanted in name
        ]
        for v in await self.voices():
            if v.matches(wanted):
                label = f"{v.name} — {v.provider}/{v.model}" + (
                    f" ({v.language})" if v.language else ""
                )
                choices.append(
                    app_commands.Choice(name=label[:100], value=f"{v.provider}|{v.model}|{v.id}")
                )
            if len(choices) >= MAX_CHOICES:
                break
        return choices[:MAX_CHOICES]


async def _listed(provider: Provider) -> list[Voice]:
    try:
        async with asyncio.timeout(LIST_TIMEOUT_S):
            return await provider.list_voices()
    except (OyezError, TimeoutError) as exc:
        log.info("voices of %s left out: %s", provider.name, exc)
        return []
