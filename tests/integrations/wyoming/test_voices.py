"""The warm voice list: what a refresh keeps when a provider cannot list its voices, and the
voice a request that names only a language gets."""

from __future__ import annotations

from pathlib import Path

from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.wyoming.voices import VoiceCatalogue
from tests.fakes.base import ScriptedResponse
from tests.fakes.together import DEFAULT_API_KEY, FakeTogether

KOKORO = "together/hexgrad/Kokoro-82M/af_bella"


async def test_a_provider_that_cannot_list_keeps_its_voices(tmp_path: Path) -> None:
    async with FakeTogether() as together:
        section = {"api_key": DEFAULT_API_KEY, "base_url": together.base_url, "voices_ttl_s": 0}
        settings = config.load(data_dir=tmp_path, providers={"together": section})
        pipeline = SpeechPipeline(settings)
        try:
            catalogue = VoiceCatalogue(pipeline, "en")
            await catalogue.refresh()
            assert catalogue.get(KOKORO) is not None
            down = ScriptedResponse(500, {"error": {"message": "down", "type": "server_error"}})
            together.script("GET", "/v1/voices", *[down] * 50)
            asked = len(together.requests)
            await catalogue.refresh()
            assert len(together.requests) > asked  # asked again (no cache), and it failed
            assert catalogue.get(KOKORO) is not None  # kept from the last refresh
            assert catalogue.get("piper/en_US-joe-medium") is not None
        finally:
            await pipeline.aclose()


async def test_a_language_gets_the_default_providers_voice_first(tmp_path: Path) -> None:
    async with FakeTogether() as together:
        settings = config.load(
            data_dir=tmp_path,
            providers={"together": {"api_key": DEFAULT_API_KEY, "base_url": together.base_url}},
        )
        pipeline = SpeechPipeline(settings)
        try:
            catalogue = VoiceCatalogue(pipeline, "en")
            await catalogue.refresh()
            chosen = catalogue.for_language("en-US", "piper")
            assert chosen is not None and chosen.name == "piper/en_US-joe-medium"
            other = catalogue.for_language("en", "together")
            assert other is not None and other.provider == "together"
            assert catalogue.for_language("de_DE", "piper") is None
        finally:
            await pipeline.aclose()
