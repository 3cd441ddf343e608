"""Google Cloud Text-to-Speech against the simulated API (tests/fakes/google.py): the request
Google documents, its voices, its error model, billing by the character, and real speech."""

from __future__ import annotations

import io
import json
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import (
    ConfigError,
    InsufficientCredits,
    InvalidOptions,
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
    UnknownVoice,
)
from bot.ops import config
from bot.providers.base import ProviderRegistry, SynthesisJob
from bot.speech import AudioEncoding, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.google import GoogleProvider
from integrations.google.provider import MAX_INPUT_BYTES, voice_type
from tests.fakes.base import ScriptedResponse
from tests.fakes.google import DEFAULT_API_KEY, FakeGoogleTTS
from tests.support.asr import Transcriber, word_error_rate
from tests.support.speech import piper_pcm

KEY = DEFAULT_API_KEY
SYNTHESIZE = "/v1/text:synthesize"
VOICES = "/v1/voices"


def google_settings(fake: FakeGoogleTTS, tmp_path: Path, **section: Any) -> config.Settings:
    section = {"api_key": KEY, "base_url": fake.base_url, **section}
    return config.load(data_dir=tmp_path / "data", providers={"google": section})


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogleTTS]:
    async with FakeGoogleTTS() as server:
        yield server


@pytest.fixture
async def google(fake: FakeGoogleTTS, tmp_path: Path) -> AsyncIterator[GoogleProvider]:
    registry = ProviderRegistry.default(google_settings(fake, tmp_path))
    provider = registry.get("google")
    assert isinstance(provider, GoogleProvider)
    yield provider
    await registry.aclose()


async def make_job(
    provider: GoogleProvider, voice: str | None = None, text: str = "Hello.", **options: Any
) -> SynthesisJob:
    chosen = await provider.resolve_voice(voice, None)
    return SynthesisJob("r1", text, chosen, provider.validate_options(chosen, options))


def sent(fake: FakeGoogleTTS) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in fake.requests_to(SYNTHESIZE)]


async def test_the_request_is_the_documented_one_and_the_cost_its_characters(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    text = "The bins go out tonight."
    result = await google.synthesize(await make_job(google, text=text))
    (body,) = sent(fake)
    assert body == {
        "input": {"text": text},
        "voice": {"languageCode": "en-US", "name": "en-US-Standard-C"},
        "audioConfig": {"audioEncoding": "LINEAR16"},
    }
    (logged,) = fake.requests_to(SYNTHESIZE)
    assert logged.headers["x-goog-api-key"] == "<redacted>"  # the key in its header only
    assert "key" not in logged.query
    assert result.chunk.encoding is AudioEncoding.WAV
    with wave.open(io.BytesIO(result.chunk.data)) as wav:  # LINEAR16 is a WAV file
        assert wav.getframerate() == 24000  # en-US-Standard-C's own rate
        assert wav.getnframes() > 0
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(len(text) * 4.0 / 1e6)  # Standard: $4 / M
    assert fake.characters_billed == len(text)


async def test_options_are_sent_under_googles_names(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    job = await make_job(
        google,
        "en-US-Neural2-J",
        speaking_rate=1.5,
        pitch=-2,
        volume_gain_db=3,
        audio_encoding="OGG_OPUS",
    )
    result = await google.synthesize(job)
    (body,) = sent(fake)
    assert body["voice"] == {"languageCode": "en-US", "name": "en-US-Neural2-J"}
    assert body["audioConfig"] == {
        "audioEncoding": "OGG_OPUS",
        "speakingRate": 1.5,
        "pitch": -2,
        "volumeGainDb": 3,
    }
    assert result.chunk.encoding is AudioEncoding.OGG_OPUS
    assert result.chunk.data.startswith(b"OggS")
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(len("Hello.") * 16.0 / 1e6)  # Neural2


async def test_an_audio_profile_is_sent_from_the_settings_or_the_request(
    fake: FakeGoogleTTS, tmp_path: Path
) -> None:
    speaker = "small-bluetooth-speaker-class-device"
    provider = GoogleProvider.from_settings(
        google_settings(fake, tmp_path, effects_profile=speaker)
    )
    try:
        await provider.synthesize(await make_job(provider))
        await provider.synthesize(
            await make_job(provider, effects_profile="headphone-class-device")
        )
        with pytest.raises(InvalidOptions, match="effects_profile"):
            await make_job(provider, effects_profile="a-toaster")
    finally:
        await provider.aclose()
    first, second = sent(fake)
    assert first["audioConfig"]["effectsProfileId"] == [speaker]
    assert second["audioConfig"]["effectsProfileId"] == ["headphone-class-device"]


async def test_speed_is_the_speaking_rate_and_prices_may_be_set(
    fake: FakeGoogleTTS, tmp_path: Path
) -> None:
    provider = GoogleProvider.from_settings(
        google_settings(fake, tmp_path, prices={"Standard": 2.5}, sample_rate_hertz=16000)
    )
    try:
        voice = await provider.resolve_voice(None, None)
        assert provider.rate_options(voice, 1.25) == {"speaking_rate": 1.25}
        options = provider.validate_options(voice, provider.rate_options(voice, 1.25))
        result = await provider.synthesize(SynthesisJob("r", "Tea.", voice, options))
        (body,) = sent(fake)
        assert body["audioConfig"] == {
            "audioEncoding": "LINEAR16",
            "speakingRate": 1.25,
            "sampleRateHertz": 16000,
        }
        with wave.open(io.BytesIO(result.chunk.data)) as wav:
            assert wav.getframerate() == 16000
        assert result.usage is not None
        assert result.usage.cost_usd == pytest.approx(4 * 2.5 / 1e6)
        assert provider.estimated_cost(voice) == pytest.approx(100 * 2.5 / 1e6)
    finally:
        await provider.aclose()


def test_an_opus_rate_opus_cannot_encode_is_a_configuration_error(tmp_path: Path) -> None:
    section = {"audio_encoding": "OGG_OPUS", "sample_rate_hertz": 22050}
    settings = config.load(data_dir=tmp_path / "data", providers={"google": section})
    with pytest.raises(ConfigError) as caught:
        GoogleProvider.from_settings(settings)
    assert "providers.google" in str(caught.value)
    assert (
        "sample_rate_hertz: Value error, OGG_OPUS takes 8000, 12000, 16000, 24000, 48000 Hz, "
        in str(caught.value)
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"speaking_rate": 2.5}, "speaking_rate"),
        ({"pitch": -21}, "pitch"),
        ({"volume_gain_db": 17}, "volume_gain_db"),
        ({"audio_encoding": "FLAC"}, "audio_encoding"),
        ({"speed": 1.2}, "speed"),
    ],
)
async def test_invalid_options_never_reach_the_api(
    google: GoogleProvider, fake: FakeGoogleTTS, options: dict[str, Any], named: str
) -> None:
    voice = await google.resolve_voice(None, None)
    with pytest.raises(InvalidOptions) as caught:
        google.validate_options(voice, options)
    assert named in str(caught.value)
    assert fake.requests_to(SYNTHESIZE) == []


async def test_over_long_input_is_counted_in_bytes_and_refused_before_any_call(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    text = "é" * 2600  # 2,600 characters, 5,200 bytes
    assert len(text) < MAX_INPUT_BYTES < len(text.encode())
    with pytest.raises(InvalidRequest) as caught:
        await google.synthesize(await make_job(google, text=text))
    assert "5200 bytes" in str(caught.value)
    assert "at most 5000" in str(caught.value)
    assert fake.requests_to(SYNTHESIZE) == []


async def test_voices_are_listed_with_their_type_and_language_and_kept(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    voices = {v.id: v for v in await google.list_voices()}
    assert voices["en-US-Neural2-J"].model == "Neural2"
    assert voices["en-US-Chirp3-HD-Kore"].model == "Chirp3-HD"
    assert voices["en-GB-Neural2-B"].language == "en_GB"
    assert voices["de-DE-Standard-A"].label == "google/Standard/de-DE-Standard-A"
    await google.list_voices()
    await google.resolve_voice("en-us-wavenet-f", None)  # any case
    assert len(fake.requests_to(VOICES)) == 1  # kept voices_ttl_s
    chosen = await google.resolve_voice("de-DE-Standard-A", None)
    await google.synthesize(SynthesisJob("r", "Guten Abend.", chosen))
    assert sent(fake)[0]["voice"] == {"languageCode": "de-DE", "name": "de-DE-Standard-A"}


def test_a_voices_type_is_read_from_its_name() -> None:
    assert voice_type("en-US-Neural2-J") == "Neural2"
    assert voice_type("cmn-CN-Wavenet-A") == "Wavenet"
    assert voice_type("en-US-Chirp3-HD-Achernar") == "Chirp3-HD"
    assert voice_type("odd") == "odd"


async def test_an_unknown_voice_is_refused_with_its_languages_voices(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    with pytest.raises(UnknownVoice) as caught:
        await google.resolve_voice("en-US-Neural2-Z", None)
    message = str(caught.value)
    assert "did you mean 'en-US-Neural2-J'" in message
    assert "en-US-Standard-C" in message
    assert "de-DE" not in message  # only English (US) voices: Google has hundreds
    assert fake.requests_to(SYNTHESIZE) == []


@pytest.mark.parametrize(
    ("status", "canonical", "reason", "error", "retryable"),
    [
        (400, "INVALID_ARGUMENT", None, ProviderRequestError, False),
        (400, "INVALID_ARGUMENT", "API_KEY_INVALID", ProviderAuthError, False),
        (403, "PERMISSION_DENIED", "SERVICE_DISABLED", ProviderAuthError, False),
        (403, "PERMISSION_DENIED", "BILLING_DISABLED", InsufficientCredits, False),
        (500, "INTERNAL", None, ProviderUnavailable, True),
        (503, "UNAVAILABLE", None, ProviderUnavailable, True),
    ],
)
async def test_googles_errors_map_to_typed_errors(  # noqa: PLR0913 - fixtures + parametrize columns
    google: GoogleProvider,
    fake: FakeGoogleTTS,
    status: int,
    canonical: str,
    reason: str | None,
    error: type[ProviderError],
    retryable: bool,
) -> None:
    job = await make_job(google)
    fake.inject_error(status, canonical, f"Google says no ({canonical})", reason=reason)
    with pytest.raises(error) as caught:
        await google.synthesize(job)
    assert type(caught.value) is error
    message = str(caught.value)
    assert message.startswith(f"google/Standard: Google says no ({canonical})")
    assert f"(HTTP {status})" in message
    assert caught.value.retryable is retryable
    assert KEY not in message
    assert fake.characters_billed == 0


async def test_a_429_waits_googles_retry_delay_when_it_gives_one(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    job = await make_job(google)
    fake.inject_rate_limit(retry_delay_s=7)
    with pytest.raises(RateLimited) as caught:
        await google.synthesize(job)
    assert caught.value.retry_after_s == 7
    assert "Quota exceeded" in str(caught.value)
    fake.inject_rate_limit()
    with pytest.raises(RateLimited) as bare:
        await google.synthesize(job)
    assert bare.value.retry_after_s is None  # no hint: the dispatcher backs off


async def test_an_answer_without_audio_is_an_error(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    job = await make_job(google)
    fake.script("POST", SYNTHESIZE, ScriptedResponse(200, {"audioContent": "not base64!"}))
    with pytest.raises(ProviderError, match="no readable audioContent"):
        await google.synthesize(job)
    fake.script("POST", SYNTHESIZE, ScriptedResponse(200, {"audioContent": ""}))
    with pytest.raises(ProviderError, match="no audio"):
        await google.synthesize(job)


async def test_an_unreadable_voice_list_is_an_error(
    google: GoogleProvider, fake: FakeGoogleTTS
) -> None:
    fake.script("GET", VOICES, ScriptedResponse(200, {"voices": [{"nom": "x"}]}))
    with pytest.raises(ProviderError, match="the voice list cannot be read"):
        await google.list_voices()
    assert len(await google.list_voices()) > 1  # not kept: asked again


async def test_a_wrong_key_is_an_auth_error_and_never_shown(
    fake: FakeGoogleTTS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "AIzaSy-never-print-me-0123456789abcdef"
    provider = GoogleProvider.from_settings(google_settings(fake, tmp_path, api_key=secret))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await provider.list_voices()
    finally:
        await provider.aclose()
    assert caught.value.status == 400
    assert "API key not valid" in str(caught.value)
    assert fake.requests[0].headers["x-goog-api-key"] == "<redacted>"
    for text in (str(caught.value), caplog.text, repr(provider.settings), str(provider.settings)):
        assert secret not in text


async def test_without_a_key_nothing_is_sent(
    fake: FakeGoogleTTS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    settings = config.load(
        data_dir=tmp_path / "data", providers={"google": {"base_url": fake.base_url}}
    )
    provider = GoogleProvider.from_settings(settings)
    try:
        assert provider.configuration_problem() == (
            "no API key: set GOOGLE_API_KEY or providers.google.api_key"
        )
        with pytest.raises(ProviderAuthError, match="no API key"):
            await provider.list_voices()
    finally:
        await provider.aclose()
    assert fake.requests == []
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)  # the environment's key is taken
    provider = GoogleProvider.from_settings(settings)
    try:
        assert provider.configuration_problem() is None
        assert len(await provider.list_voices()) > 0
    finally:
        await provider.aclose()


async def test_billing_off_opens_the_credit_circuit_and_the_fallback_speaks(
    fake: FakeGoogleTTS, tmp_path: Path
) -> None:
    pipeline = SpeechPipeline(google_settings(fake, tmp_path))
    ask = SpeechRequest(text="The post has come.", provider="google")
    try:
        paid = await pipeline.speak(ask)
        assert paid.voice.label == "google/Standard/en-US-Standard-C"
        assert paid.cost_usd == pytest.approx(len(ask.text) * 4.0 / 1e6)
        fake.inject_billing_disabled()
        spoken = await pipeline.speak(ask)
        assert spoken.voice.provider == "piper"
        assert "requires billing to be enabled" in spoken.fallbacks[0].reason
        calls = len(fake.requests_to(SYNTHESIZE))
        assert (await pipeline.speak(ask)).voice.provider == "piper"  # circuit open
        assert len(fake.requests_to(SYNTHESIZE)) == calls  # no paid call tried
    finally:
        await pipeline.aclose()
    assert fake.characters_billed == len(ask.text)


async def test_real_speech_through_the_fake_and_the_pipeline(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    sentence = "The washing machine has finished and the laundry is ready to hang."
    async with FakeGoogleTTS(synthesizer=piper_pcm) as fake:
        speech = SpeechPipeline(google_settings(fake, tmp_path))
        try:
            utterance = await speech.speak(
                SpeechRequest(text=sentence, provider="google", voice="en-US-Neural2-J")
            )
        finally:
            await speech.aclose()
        (body,) = sent(fake)
    assert body["input"] == {"text": sentence}
    assert utterance.voice.label == "google/Neural2/en-US-Neural2-J"
    assert (utterance.sample_rate, utterance.channels) == (48_000, 2)
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(sentence, heard) <= 0.2, heard
