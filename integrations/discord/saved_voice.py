"""Which voice a member's words are said in, surviving a saved voice that is gone.

A member's voice (``/voice set``) or a server's (``/settings voice``) is kept by name; the
provider may remove it later (a cloud voice retired, a model renamed, a provider taken out of
the configuration or left without its key). Such a voice passes the words on to the next
choice — the member's, then the server's, then Oyez's default voice — instead of leaving
the member unable to speak until they choose again; :func:`prepare_first` says what was passed
over and why, for the reply. A voice named in the request itself (``/say voice:``) is not
replaced: its error is the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import ConfigError, UnknownModel, UnknownProvider, UnknownVoice
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from integrations.discord.catalogue import parse_voice
from integrations.discord.guilds import GuildSettings
from integrations.discord.preferences import VoiceChoice

__all__ = ["GONE", "Choice", "choices", "prepare_first"]

log = logging.getLogger(__name__)

#: What a saved voice that is gone raises from :meth:`SpeechPipeline.prepare`.
GONE = (UnknownProvider, UnknownVoice, UnknownModel, ConfigError)


@dataclass(frozen=True, slots=True)
class Choice:
    """One voice to try: ``what`` it is to the member ("your voice"), and its request."""

    what: str
    request: SpeechRequest

    @property
    def label(self) -> str:
        request = self.request
        parts = (request.provider, request.model, request.voice)
        return "/".join(p for p in parts if p) or "the default voice"


def choices(
    base: SpeechRequest,
    saved: VoiceChoice | None,
    server: GuildSettings,
    named_voices: Sequence[str],
) -> list[Choice]:
    """``base`` (its text, speed, source…) in the member's ``saved`` voice, then in the
    ``server``'s, then in Oyez's default voice, each once. A saved voice whose name is one of
    ``named_voices`` (configured ``voices.<name>``, lower case) brings its own provider."""
    found: list[Choice] = []
    seen: set[tuple[str | None, str | None, str | None]] = set()

    def add(what: str, provider: str | None, model: str | None, voice: str | None) -> None:
        if (provider, model, voice) in seen:
            return
        seen.add((provider, model, voice))
        request = base.model_copy(update={"provider": provider, "model": model, "voice": voice})
        found.append(Choice(what, request))

    if saved is not None:
        provider = None if saved.voice.casefold() in named_voices else saved.provider
        add("your voice", provider, saved.model, saved.voice)
    if server.voice is not None or server.provider is not None:
        add("the server's voice", *parse_voice(server.voice, server.provider))
    add("the default voice", None, None, None)
    return found


async def prepare_first(
    pipeline: SpeechPipeline, candidates: Sequence[Choice]
) -> tuple[PreparedRequest, list[str]]:
    """The first of ``candidates`` that :meth:`~SpeechPipeline.prepare` takes, and one line
    for each passed over because its voice is gone (:data:`GONE`): "your voice (together/
    Kokoro/af_old): unknown voice …". Raises what the last one raises, and at once what any
    raises that is not :data:`GONE` (too long a text fails in every voice)."""
    if not candidates:
        raise ValueError("no voice to try")
    passed: list[str] = []
    for candidate in candidates[:-1]:
        try:
            return await pipeline.prepare(candidate.request), passed
        except GONE as exc:
            passed.append(f"{candidate.what} ({candidate.label}): {exc}")
            log.info("request %s: %s", candidate.request.id, passed[-1])
    return await pipeline.prepare(candidates[-1].request), passed
