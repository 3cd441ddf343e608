"""The voices Oyez offers over Wyoming, kept warm: ``describe`` is answered from memory.

Home Assistant gives ``describe`` one second (``homeassistant/components/wyoming/data.py``,
2025.4.4: ``_INFO_TIMEOUT = 1``, three retries), too little for a cloud provider's voice list,
so :meth:`VoiceCatalogue.refresh` lists every usable provider's voices at start and then every
``wyoming.voices_refresh_s``. A voice is named on the wire by its label (``piper/en_US-joe-medium``,
``segmind/orpheus-3b-0.1/dan``) and a named voice (``voices:`` in the configuration) by its name.
Home Assistant takes an engine's languages from its voices, so every voice lists at least one
(``wyoming.default_language`` when its provider names none), and every tag of it that another
voice has.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from bot.errors import ConfigError, InvalidRequest, OyezError
from bot.providers.base import Provider
from bot.speech import Voice
from bot.synthesis.pipeline import SpeechPipeline

__all__ = ["Choice", "VoiceCatalogue", "describe_voice"]

log = logging.getLogger(__name__)

#: Seconds a provider has to list its voices before it is left out of this refresh.
LIST_TIMEOUT_S = 10.0
ATTRIBUTION = Attribution(name="Oyez", url="")  # no project page to point at yet
#: How people spell the built-in providers (others: their name, capitalised).
_TITLES = {"openai": "OpenAI"}


@dataclass(frozen=True, slots=True)
class Choice:
    """What a Wyoming voice name means: a provider's voice, or a named voice (``named``)."""

    name: str
    description: str
    languages: tuple[str, ...]
    provider: str
    model: str | None = None
    voice: str | None = None
    named: bool = False

    def wyoming(self) -> TtsVoice:
        return TtsVoice(
            name=self.name,
            description=self.description,
            attribution=ATTRIBUTION,
            installed=True,
            version=None,
            languages=list(self.languages),
        )


def _title(provider: str) -> str:
    return _TITLES.get(provider, provider[:1].upper() + provider[1:])


def describe_voice(voice: Voice) -> str:
    """What a person chooses from: ``Piper — lessac (medium)``, ``Segmind Orpheus 3B — dan``,
    ``OpenAI tts-1 — alloy``, ``Together Kokoro-82M — af_bella``."""
    title = _title(voice.provider)
    if voice.model == voice.id:
        return f"{title} — {voice.name}"
    head, colon, tail = voice.name.partition(": ")
    if colon:  # "Orpheus 3B: dan": the model's title and the voice
        return f"{title} {head} — {tail}"
    return f"{title} {voice.model.rsplit('/', 1)[-1]} — {voice.name}"  # hexgrad/Kokoro-82M


def _base(language: str) -> str:
    return language.replace("-", "_").split("_")[0].casefold()


def _shared_languages(choices: dict[str, Choice]) -> dict[str, Choice]:
    """Each voice under every tag of its language that any voice has (``en`` and ``en_US``):
    Home Assistant lists an engine's voices per tag, exactly, and its pipelines pick one tag;
    a voice under ``en`` only would not show in an ``en_US`` pipeline."""
    tags: dict[str, list[str]] = {}
    for choice in choices.values():
        for language in choice.languages:
            group = tags.setdefault(_base(language), [])
            if language not in group:
                group.append(language)
    return {
        key: replace(
            choice,
            languages=tuple(
                dict.fromkeys(
                    [
                        *choice.languages,
                        *(t for lang in choice.languages for t in tags[_base(lang)]),
                    ]
                )
            ),
        )
        for key, choice in choices.items()
    }


class VoiceCatalogue:
    """The voices of ``pipeline``'s usable providers and the named voices, as of the last
    :meth:`refresh`."""

    def __init__(self, pipeline: SpeechPipeline, default_language: str) -> None:
        self.pipeline = pipeline
        self.default_language = default_language
        self._choices: dict[str, Choice] = {}
        self._refreshed = False

    @property
    def choices(self) -> list[Choice]:
        return list(self._choices.values())

    def get(self, name: str) -> Choice | None:
        """The voice called ``name`` (case-insensitive)."""
        return self._choices.get(name.casefold())

    async def refresh(self) -> None:
        """List every usable provider's voices again (each within :data:`LIST_TIMEOUT_S`; one
        that fails keeps its voices of the last refresh)."""
        providers = self._usable_providers()
        listed = await asyncio.gather(*(self._listed(p) for p in providers))
        choices: dict[str, Choice] = {}
        for provider, voices in zip(providers, listed, strict=True):
            if voices is None:  # keep what it had
                choices |= {k: c for k, c in self._choices.items() if c.provider == provider.name}
                continue
            for voice in voices:
                choice = Choice(
                    voice.label,
                    describe_voice(voice),
                    (voice.language or self.default_language,),
                    voice.provider,
                    voice.model,
                    voice.id,
                )
                choices[choice.name.casefold()] = choice
        choices = _shared_languages(choices)
        named = self._named(choices)
        self._choices = named | choices
        if not self._refreshed:
            log.info("wyoming: %d voices offered", len(self._choices))
        self._refreshed = True

    def _usable_providers(self) -> list[Provider]:
        registry = self.pipeline.registry
        usable = []
        for name in registry.names():
            try:
                provider = registry.get(name)
            except (InvalidRequest, ConfigError):
                continue
            if provider.configuration_problem() is None:
                usable.append(provider)
        return usable

    @staticmethod
    async def _listed(provider: Provider) -> list[Voice] | None:
        try:
            async with asyncio.timeout(LIST_TIMEOUT_S):
                return await provider.list_voices()
        except (OyezError, TimeoutError) as exc:
            log.warning(
                "wyoming: the voices of %s are not listed this time: %s", provider.name, exc
            )
            return None

    def _named(self, listed: dict[str, Choice]) -> dict[str, Choice]:
        """The named voices, each with the languages of the voice it stands for when listed."""
        named: dict[str, Choice] = {}
        for name, voice in sorted(self.pipeline.settings.voices.items()):
            target = next(
                (
                    c
                    for c in listed.values()
                    if c.provider == voice.provider
                    and voice.voice is not None
                    and voice.voice.casefold() == (c.voice or "").casefold()
                    and (voice.model is None or voice.model == c.model)
                ),
                None,
            )
            what = f"{_title(voice.provider)} {voice.voice or 'default voice'}"
            description = voice.description or f"{name} ({what})"
            languages = target.languages if target else (self.default_language,)
            named[name] = Choice(
                name, description, languages, voice.provider, voice=name, named=True
            )
        return named

    def info(self, version: str) -> Info:
        """``describe``'s answer: one TTS program, "Oyez", with every voice, streaming input
        supported."""
        program = TtsProgram(
            name="Oyez",
            description="Oyez: every configured provider's voices, with caching and fallbacks",
            attribution=ATTRIBUTION,
            installed=True,
            version=version,
            voices=[c.wyoming() for c in self._choices.values()],
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    def for_language(self, language: str, prefer: str) -> Choice | None:
        """The voice a request that names only a ``language`` gets: the first of provider
        ``prefer`` that speaks it, else the first that does (``en`` matches ``en_US``)."""
        wanted = language.replace("-", "_").casefold()

        def speaks(choice: Choice) -> bool:
            spoken = [lang.replace("-", "_").casefold() for lang in choice.languages]
            return any(wanted in (lang, lang.split("_")[0]) for lang in spoken)

        candidates = [c for c in self._choices.values() if not c.named and speaks(c)]
        preferred = [c for c in candidates if c.provider == prefer]
        found = preferred or candidates
        return found[0] if found else None
