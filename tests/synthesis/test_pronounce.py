"""Pronunciation dictionaries: whole words, any case, the longest entry first, a guild's entries
over the configuration's, and the rewritten text is what the pipeline prepares (and caches)."""

from __future__ import annotations

from pathlib import Path

from bot.ops import config
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.pronounce import Pronunciations, pronounce


def test_whole_words_any_case_longest_first() -> None:
    entries = {"ny": "New York", "ny city": "the big apple", "GIF": "jif"}
    assert pronounce("Gif and gif, not gifts", entries) == "jif and jif, not gifts"
    assert pronounce("NY City is not NY", entries) == "the big apple is not New York"
    assert pronounce("nothing here", {}) == "nothing here"
    assert pronounce("a.gif, (gif)!", entries) == "a.jif, (jif)!"


async def test_a_guilds_entries_win_over_the_global_ones() -> None:
    book = Pronunciations({"brb": "be right back", "afk": "away"})

    async def lookup(guild: str) -> dict[str, str]:
        return {"BRB": "back soon"} if guild == "2000" else {}

    book.guild_lookup = lookup
    assert await book.apply("brb, afk", None) == "be right back, away"
    assert await book.apply("brb, afk", "2000") == "back soon, away"
    assert await book.apply("brb", "9") == "be right back"


async def test_the_pipeline_prepares_the_spoken_text_at_the_asked_speed(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path, pronunciations={"HA": "Home Assistant"})
    pipeline = SpeechPipeline(settings)
    try:
        plain = await pipeline.prepare(SpeechRequest(text="HA says hi"))
        fast = await pipeline.prepare(SpeechRequest(text="HA says hi", speed=2.0))
        assert plain.text == fast.text == "Home Assistant says hi"
        assert fast.options["length_scale"] == 0.5  # Piper's length scale: 1 / speed
        assert "length_scale" not in plain.options
        assert pipeline.cache_key(plain) != pipeline.cache_key(fast)
        given = await pipeline.prepare(
            SpeechRequest(text="x", speed=2.0, options={"length_scale": 1.5})
        )
        assert given.options["length_scale"] == 1.5  # the options given win
    finally:
        await pipeline.aclose()


async def test_a_fallback_says_the_text_once_rewritten(tmp_path: Path) -> None:
    """An entry whose spoken form holds the word itself is applied once, also by the voice
    that takes over a sentence when the asked provider fails."""
    from bot.providers.base import ProviderRegistry
    from integrations import PROVIDERS
    from tests.support.tone_provider import ToneProvider

    settings = config.load(data_dir=tmp_path, pronunciations={"Bob": "Bob the builder"})
    targets = {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}
    pipeline = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    ToneProvider.mode = "fail"
    try:
        request = SpeechRequest(text="Bob is here. Bob is not.", provider="tone")
        utterance = await pipeline.speak(request)
        sentences = [s async for s in pipeline.speak_sentences(request.model_copy())]
    finally:
        ToneProvider.mode = "ok"
        await pipeline.aclose()
    assert utterance.voice.provider == "piper"
    assert utterance.text == "Bob the builder is here. Bob the builder is not."
    said = ["Bob the builder is here.", "Bob the builder is not."]
    assert [s.speech.text for s in sentences] == said
