"""Text in, speech out: the whole pipeline with the real local voice, checked by listening."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.errors import (
    BadAudio,
    ConfigError,
    EmptyText,
    InvalidOptions,
    InvalidRequest,
    ProviderError,
    RequestExpired,
    TextTooLong,
    TranscodeError,
    UnknownProvider,
    UnknownVoice,
)
from bot.ops import config
from bot.ops.config import Settings
from bot.providers.base import ProviderRegistry
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from integrations import PROVIDERS
from tests.support.asr import Transcriber, word_error_rate
from tests.support.probe import describe
from tests.support.tone_provider import ToneProvider

SENTENCES = [
    "The washing machine has finished and the laundry is ready to hang.",
    "Someone is waiting at the front door with a parcel for you.",
    "Remember to take the bins out tonight because tomorrow is collection day.",
]


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_speech_survives_the_pipeline(
    pipeline: SpeechPipeline, transcriber: Transcriber, sentence: str
) -> None:
    utterance = await pipeline.speak(SpeechRequest(text=sentence))
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(sentence, heard) <= 0.2, heard


async def test_utterance_describes_itself(pipeline: SpeechPipeline) -> None:
    utterance = await pipeline.speak(SpeechRequest(text="  Dinner\tis ready.  "))
    assert utterance.text == "Dinner is ready."
    assert utterance.voice.provider == "piper"
    assert utterance.voice.id == "en_US-joe-medium"
    assert utterance.profile is OutputProfile.OGG_OPUS
    assert (utterance.sample_rate, utterance.channels) == (48_000, 2)
    assert 0.5 < utterance.duration_s < 3
    assert utterance.profile.mime_type == "audio/ogg"
    t = utterance.timings
    assert t.first_audio_s is not None
    assert 0 < t.first_audio_s <= t.synthesis_s
    assert t.synthesis_s + t.transcode_s <= t.total_s
    assert utterance.loudness_lufs == pytest.approx(-16, abs=1.5)


async def test_mp3_for_speakers(pipeline: SpeechPipeline, transcriber: Transcriber) -> None:
    utterance = await pipeline.speak(SpeechRequest(text=SENTENCES[1], output=OutputProfile.MP3))
    info = describe(utterance.audio)
    assert info.startswith("mp3")
    assert "22050 Hz" in info  # Piper's own rate, as Home Assistant serves it
    assert utterance.sample_rate == 22_050
    assert word_error_rate(SENTENCES[1], transcriber.transcribe(utterance.audio)) <= 0.2


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"text": " \n "}, EmptyText, "empty"),
        ({"text": "x" * 1001}, TextTooLong, "limit is 1000"),
        ({"text": "hi", "provider": "segmint"}, UnknownProvider, "did you mean .segmind."),
        ({"text": "hi", "voice": "en_US-amy"}, UnknownVoice, "en_US-joe-medium"),
        ({"text": "hi", "options": {"length_scale": 0}}, InvalidOptions, "length_scale"),
    ],
)
async def test_bad_requests_fail_before_synthesis(
    pipeline: SpeechPipeline, fields: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        await pipeline.prepare(SpeechRequest.build(**fields))


@pytest.fixture
def tone() -> Iterator[type[ToneProvider]]:
    ToneProvider.calls.clear()
    ToneProvider.mode = "ok"
    yield ToneProvider
    ToneProvider.mode = "ok"


@pytest.fixture
async def tone_pipeline(settings: Settings) -> AsyncIterator[SpeechPipeline]:
    targets = {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}
    speech = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    yield speech
    await speech.aclose()


async def test_a_provider_is_a_module_plus_a_registry_entry(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    assert {"piper", "tone"} <= set(tone_pipeline.registry.names())
    utterance = await tone_pipeline.speak(
        SpeechRequest(text="beep", provider="tone", options={"seconds_per_character": 0.5})
    )
    assert tone.calls == ["beep"]
    assert utterance.voice.label == "tone/sine/a4"
    assert utterance.duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.usefixtures("tone")
async def test_a_request_is_prepared_once(
    tone_pipeline: SpeechPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[dict[str, Any]] = []
    original = ToneProvider.validate_options

    def counted(self: ToneProvider, voice: Voice, options: Mapping[str, Any]) -> dict[str, Any]:
        validated.append(dict(options))
        return original(self, voice, options)

    monkeypatch.setattr(ToneProvider, "validate_options", counted)
    request = SpeechRequest(text="One. Two. Three.", provider="tone", fallback=False)
    await tone_pipeline.speak(request)
    assert len(validated) == 1
    prepared = await tone_pipeline.prepare(request)
    assert len(validated) == 2
    await tone_pipeline.speak(prepared)
    await tone_pipeline.speak_live(prepared)
    segments = [s async for s in tone_pipeline.speak_sentences(prepared)]
    assert [s.speech.text for s in segments] == ["One.", "Two.", "Three."]
    assert len(validated) == 2  # a prepared request is never prepared again
    spoken = [s async for s in tone_pipeline.speak_sentences(request, live=True)]
    assert len(spoken) == 3
    assert len(validated) == 3  # once for the whole text, not once more per sentence


async def test_expired_request_is_never_synthesized(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    request = SpeechRequest(text="too late", provider="tone", expires_at=past)
    with pytest.raises(RequestExpired, match="before synthesis") as caught:
        await tone_pipeline.speak(request)
    assert caught.value.overdue_s >= 5
    assert tone.calls == []


async def test_request_expiring_during_synthesis_is_dropped(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ToneProvider.synthesize

    async def slow(self: ToneProvider, job: object) -> object:
        await asyncio.sleep(0.4)
        return await original(self, job)  # type: ignore[arg-type]

    monkeypatch.setattr(ToneProvider, "synthesize", slow)
    soon = datetime.now(UTC) + timedelta(seconds=0.2)
    request = SpeechRequest(text="just in time?", provider="tone", expires_at=soon)
    with pytest.raises(RequestExpired, match="after synthesis"):
        await tone_pipeline.speak(request)
    assert tone.calls == ["just in time?"]


async def test_provider_failure_reaches_a_strict_caller(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    tone.mode = "fail"
    with pytest.raises(ProviderError, match="tone: the tone generator is broken"):
        await tone_pipeline.speak(SpeechRequest(text="x", provider="tone", fallback=False))


async def test_failed_provider_falls_back_to_piper_and_says_why(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    tone.mode = "fail"
    utterance = await tone_pipeline.speak(SpeechRequest(text="Hello.", provider="tone"))
    assert utterance.voice.provider == "piper"
    (note,) = utterance.fallbacks
    assert note.provider == "tone"
    assert "the tone generator is broken" in note.reason


async def test_garbage_from_a_provider_is_that_providers_failure(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    tone.mode = "garbage"
    with pytest.raises(
        BadAudio, match=r"^tone: sent 1,400 bytes of mp3 audio \(beginning b'<html>"
    ) as e:
        await tone_pipeline.speak(SpeechRequest(text="x", provider="tone", fallback=False))
    assert "could not be decoded" in str(e.value)
    assert isinstance(e.value.__cause__, TranscodeError)
    assert "decoding the mp3 audio" in str(e.value.__cause__)


@pytest.mark.parametrize("mode", ["garbage", "truncated"])
async def test_unplayable_audio_falls_back_and_says_why(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider], mode: str
) -> None:
    tone.mode = mode
    utterance = await tone_pipeline.speak(SpeechRequest(text="Hello there.", provider="tone"))
    assert utterance.voice.provider == "piper"
    assert utterance.duration_s > 0.5
    (note,) = utterance.fallbacks
    assert note.provider == "tone"
    expected = "could not be decoded" if mode == "garbage" else "0.01 s of audio for 12 characters"
    assert expected in note.reason


@pytest.mark.usefixtures("tone")
async def test_default_provider_and_voice_come_from_config() -> None:
    settings = config.load(default_provider="tone", default_voice="A4 SINE")
    targets = {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}
    speech = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    try:
        prepared = await speech.prepare(SpeechRequest(text="hello"))
        assert (prepared.provider.name, prepared.voice.id) == ("tone", "a4")
        # default_voice belongs to the default provider: another provider keeps its own default
        other = await speech.prepare(SpeechRequest(text="hello", provider="piper"))
        assert other.voice.id == "en_US-joe-medium"
    finally:
        await speech.aclose()


@pytest.mark.usefixtures("tone")
async def test_unknown_default_voice_is_named() -> None:
    settings = config.load(default_voice="en_US-nobody")
    speech = SpeechPipeline(settings)
    try:
        with pytest.raises(UnknownVoice, match="'en_US-nobody'"):
            await speech.prepare(SpeechRequest(text="hello"))
    finally:
        await speech.aclose()


@pytest.mark.usefixtures("tone")
async def test_named_voice_brings_provider_model_and_options() -> None:
    settings = config.load(
        voices={
            "Beeper": {
                "provider": "tone",
                "voice": "a4",
                "options": {"seconds_per_character": 0.2},
            }
        }
    )
    targets = {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}
    speech = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    try:
        prepared = await speech.prepare(SpeechRequest(text="hi", voice="beeper"))
        assert prepared.provider.name == "tone"
        assert prepared.options == {"seconds_per_character": 0.2}
        mine = await speech.prepare(
            SpeechRequest(text="hi", voice="BEEPER", options={"seconds_per_character": 0.5})
        )
        assert mine.options == {"seconds_per_character": 0.5}  # the request's option wins
        with pytest.raises(InvalidRequest, match="'beeper' is a tone voice"):
            await speech.prepare(SpeechRequest(text="hi", voice="beeper", provider="piper"))
    finally:
        await speech.aclose()


def test_named_voice_needs_a_provider() -> None:
    with pytest.raises(ConfigError, match=r"voices\.grandma\.provider: Field required"):
        config.load(voices={"grandma": {"model": "chatterbox-tts"}})


async def test_requests_are_counted_by_source_provider_and_outcome(
    pipeline: SpeechPipeline,
) -> None:
    from bot.errors import UnknownVoice
    from bot.ops.metrics import REQUESTS, SYNTHESIS_SECONDS
    from bot.speech import RequestSource

    def count(outcome: str) -> float:
        return float(REQUESTS.labels(source="http", provider="piper", outcome=outcome)._value.get())

    def timed() -> float:
        histogram = SYNTHESIS_SECONDS.labels(provider="piper")
        return next(
            s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count")
        )

    ok, invalid, seconds = count("ok"), count("invalid"), timed()
    await pipeline.speak(SpeechRequest(text="Counted.", source=RequestSource.HTTP))
    with pytest.raises(UnknownVoice):
        await pipeline.speak(
            SpeechRequest(text="Not said.", voice="nobody", source=RequestSource.HTTP)
        )
    assert count("ok") == ok + 1
    assert count("invalid") == invalid + 1
    assert timed() == seconds + 1


async def test_a_voices_next_pass_has_its_graph_built_ahead_once_it_learned_its_gain(
    tone_pipeline: SpeechPipeline, tone: type[ToneProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a whole sentence taught its voice's gain, the transcoder is asked to build the
    graph of that voice's next pass (the audio shaped like this one's, at the gain learned)."""
    asked: list[tuple[list[AudioChunk], float | None]] = []
    transcoder = tone_pipeline.transcoder
    monkeypatch.setattr(transcoder, "build_ahead", lambda c, g: asked.append((list(c), g)))
    text = "beep boop, beep boop"  # 1 s: long enough to be measured
    request = SpeechRequest(text=text, provider="tone", output=OutputProfile.WAV, cache=False)
    spoken = await tone_pipeline.speak(request)
    ((chunks, gain),) = asked
    assert gain is not None and gain == tone_pipeline.gains.get(spoken.voice.label)
    assert [(c.encoding, c.sample_rate) for c in chunks] == [(AudioEncoding.PCM_S16LE, 16_000)]
    assert tone.calls == [text]
