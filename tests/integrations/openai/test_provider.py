"""OpenAI-compatible providers against the simulated Kokoro-FastAPI server.

Over 450 lines: every model option and error of the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import (
    InsufficientCredits,
    InvalidOptions,
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
    UnknownVoice,
)
from bot.ops import config
from bot.providers.base import Provider, ProviderRegistry, SynthesisJob
from bot.speech import AudioChunk, AudioEncoding, SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from integrations.openai import OpenAIProvider
from integrations.openai.provider import OPENAI_VOICES
from integrations.piper import PiperProvider
from tests.fakes import FakeOpenAISpeech, ScriptedResponse
from tests.fakes.audio import resample, tone_synthesizer
from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.together import KOKORO_VOICES
from tests.support.asr import Transcriber, word_error_rate

SPEECH = "/v1/audio/speech"
VOICES = "/v1/audio/voices"


def kokoro_settings(
    fake: FakeOpenAISpeech, tmp_path: Path, name: str = "kokoro", **section: Any
) -> config.Settings:
    section = {"type": "openai", "base_url": fake.url("/v1"), "model": "kokoro", **section}
    return config.load(data_dir=tmp_path / "data", providers={name: section})


@pytest.fixture
async def kokoro(
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[OpenAIProvider]:
    registry = ProviderRegistry.default(kokoro_settings(fake_openai, tmp_path))
    provider = registry.get("kokoro")
    assert isinstance(provider, OpenAIProvider)
    yield provider
    await registry.aclose()


async def make_job(
    provider: OpenAIProvider, voice: str | None = "af_heart", text: str = "Hello.", **options: Any
) -> SynthesisJob:
    chosen = await provider.resolve_voice(voice, None)
    return SynthesisJob("r1", text, chosen, provider.validate_options(chosen, options))


async def speak(provider: Provider, job: SynthesisJob, *, streaming: bool) -> list[AudioChunk]:
    """All the audio of ``job``, through :meth:`stream` or :meth:`synthesize`."""
    if streaming:
        return [piece.chunk async for piece in provider.stream(job)]
    return [(await provider.synthesize(job)).chunk]


def tone_pcm(text: str, speed: float = 1.0) -> bytes:
    pcm, rate = tone_synthesizer(text)
    return resample(pcm, rate, round(24_000 / speed))


# -- a named instance through the registry -----------------------------------------------------


async def test_a_named_instance_speaks_under_its_own_name(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    assert (kokoro.name, kokoro.kind) == ("kokoro", "openai")
    voice = await kokoro.resolve_voice("AF_HEART", None)
    assert voice == Voice("kokoro", "kokoro", "af_heart", "af_heart")
    chunks = [
        c.chunk async for c in kokoro.stream(SynthesisJob("r", "Good <sigh> morning.", voice))
    ]
    voices_call, speech_call = fake_openai.requests
    assert (voices_call.method, voices_call.path) == ("GET", VOICES)
    assert speech_call.json == {
        "model": "kokoro",
        "input": "Good <sigh> morning.",
        "voice": "af_heart",
        "response_format": "mp3",
        "stream": True,
    }
    assert "authorization" not in speech_call.headers  # no key configured, none sent
    assert speech_call.headers["content-type"] == "application/json"
    assert chunks
    assert {(c.encoding, c.sample_rate, c.channels) for c in chunks} == {(AudioEncoding.MP3, 0, 0)}


async def test_plain_call_shape_and_speed(
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    tmp_path: Path,
) -> None:
    provider = OpenAIProvider.from_settings(
        kokoro_settings(fake_openai, tmp_path, response_format="pcm", stream=False), "kokoro"
    )
    text = "Quick now."
    normal = (await provider.synthesize(await make_job(provider, text=text))).chunk
    fast = (await provider.synthesize(await make_job(provider, text=text, speed=2))).chunk
    first, second = fake_openai.requests_to(SPEECH)
    base = {"model": "kokoro", "input": text, "voice": "af_heart", "response_format": "pcm"}
    assert first.json == base
    assert second.json == {**base, "speed": 2.0}
    assert (normal.encoding, normal.sample_rate, normal.channels) == (
        AudioEncoding.PCM_S16LE,
        24_000,
        1,
    )
    assert normal.data == tone_pcm(text)
    assert fast.data == tone_pcm(text, 2.0)
    assert fast.duration_s is not None
    assert normal.duration_s is not None
    assert fast.duration_s == pytest.approx(normal.duration_s / 2, rel=0.01)
    await provider.aclose()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"speed": 0.2}, "speed: Input should be greater than or equal to 0.25"),
        ({"speed": 4.5}, "speed: Input should be less than or equal to 4"),
        ({"response_format": "ogg"}, "response_format: Input should be"),
        ({"instructions": "whisper"}, "instructions: unknown option"),
    ],
)
async def test_invalid_options_never_reach_the_server(
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    tmp_path: Path,
    options: dict[str, Any],
    problem: str,
) -> None:
    speech = SpeechPipeline(kokoro_settings(fake_openai, tmp_path))
    try:
        await speech.registry.get("kokoro").list_voices()
        fake_openai.requests.clear()
        request = SpeechRequest(text="Hi.", provider="kokoro", voice="af_sky", options=options)
        with pytest.raises(InvalidOptions) as caught:
            await speech.speak(request)
    finally:
        await speech.aclose()
    assert problem in str(caught.value)
    assert "kokoro/kokoro" in str(caught.value)
    assert fake_openai.requests == []


async def test_speed_limits_are_accepted(kokoro: OpenAIProvider) -> None:
    voice = await kokoro.resolve_voice(None, None)
    assert kokoro.validate_options(voice, {"speed": 0.25}) == {"speed": 0.25}
    assert kokoro.validate_options(voice, {"speed": "4"}) == {"speed": 4.0}


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_over_long_input_is_refused_before_any_call(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    streaming: bool,
) -> None:
    job = await make_job(kokoro, text="x" * 4097, response_format="pcm")
    fake_openai.requests.clear()
    with pytest.raises(InvalidRequest, match="4097 characters, the speech API takes at most 4096"):
        await speak(kokoro, job, streaming=streaming)
    assert fake_openai.requests == []
    at_limit = await make_job(kokoro, text="x" * 4096, response_format="pcm")
    assert (await kokoro.synthesize(at_limit)).chunk.data


# -- voices ------------------------------------------------------------------------------------


async def test_server_voices_are_listed_and_cached(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    voices = await kokoro.list_voices()
    assert [v.id for v in voices] == list(KOKORO_VOICES)
    assert {(v.provider, v.model) for v in voices} == {("kokoro", "kokoro")}
    fake_openai.requests.clear()
    assert await kokoro.list_voices() == voices
    await kokoro.resolve_voice("bm_george", None)
    assert fake_openai.requests == []
    with pytest.raises(UnknownVoice) as caught:
        await kokoro.resolve_voice("af_hart", None)
    assert "for provider 'kokoro'" in str(caught.value)
    assert "did you mean 'af_heart'" in str(caught.value)
    assert fake_openai.requests == []


async def test_voice_list_shapes_static_list_and_fallback(
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    tmp_path: Path,
) -> None:
    listed = {"voices": [{"id": "af_sky", "name": "Sky"}, {"name": "am_adam"}, "bf_emma"]}
    fake_openai.script("GET", VOICES, ScriptedResponse(200, listed))
    objects = OpenAIProvider.from_settings(kokoro_settings(fake_openai, tmp_path), "kokoro")
    assert [v.id for v in await objects.list_voices()] == ["af_sky", "am_adam", "bf_emma"]

    for status in (404, 405):
        fake_openai.script("GET", VOICES, ScriptedResponse(status, {"detail": "Not Found"}))
        missing = OpenAIProvider.from_settings(kokoro_settings(fake_openai, tmp_path), "kokoro")
        assert [v.id for v in await missing.list_voices()] == list(OPENAI_VOICES)
        await missing.aclose()
    fake_openai.script("GET", VOICES, ScriptedResponse(401, {"message": "who are you"}))
    refused = OpenAIProvider.from_settings(kokoro_settings(fake_openai, tmp_path), "kokoro")
    with pytest.raises(ProviderAuthError, match=r"^kokoro/kokoro: who are you"):
        await refused.list_voices()

    fake_openai.requests.clear()
    static = OpenAIProvider.from_settings(
        kokoro_settings(fake_openai, tmp_path, voices=["af_nicole"], default_voice="af_nicole"),
        "kokoro",
    )
    assert [v.id for v in await static.list_voices()] == ["af_nicole"]
    assert (await static.resolve_voice(None, None)).id == "af_nicole"
    assert fake_openai.requests == []
    for provider in (objects, refused, static):
        await provider.aclose()


async def test_the_default_voice_is_taken_even_when_not_listed(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    # Kokoro-FastAPI maps OpenAI's names onto its voices without listing them.
    alloy = await kokoro.resolve_voice(None, None)
    assert alloy == Voice("kokoro", "kokoro", "alloy", "alloy")
    await kokoro.synthesize(SynthesisJob("r", "Hi.", alloy))
    assert fake_openai.requests_to(SPEECH)[0].json["voice"] == "alloy"


# -- keys --------------------------------------------------------------------------------------


async def test_keys_go_only_where_they_belong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    async with FakeOpenAISpeech(api_key="sk-env-key") as fake:
        section = {"base_url": fake.url("/v1"), "voices": ["alloy"]}
        settings = config.load(
            data_dir=tmp_path,
            providers={"openai": section, "kokoro": {"type": "openai", **section}},
        )
        registry = ProviderRegistry.default(settings)
        voice = Voice("x", "tts-1", "alloy", "alloy")
        chunk = (await registry.get("openai").synthesize(SynthesisJob("r", "Hi.", voice))).chunk
        assert chunk.encoding is AudioEncoding.MP3
        assert fake.requests[-1].headers["authorization"] == "Bearer <redacted>"
        # Another instance never borrows OPENAI_API_KEY: it sends nothing, and is refused.
        with pytest.raises(ProviderAuthError) as caught:
            await registry.get("kokoro").synthesize(SynthesisJob("r", "Hi.", voice))
        assert "authorization" not in fake.requests[-1].headers
        assert str(caught.value) == ("kokoro/tts-1: Invalid or missing API key (HTTP 401)")
        await registry.aclose()


def test_openai_itself_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = OpenAIProvider.from_settings(config.load())
    assert provider.configuration_problem() == (
        "no API key: set OPENAI_API_KEY or providers.openai.api_key"
    )
    # nor does it ask OpenAI for voices (`oyez voices` then costs no request and no aiohttp)
    with pytest.raises(ProviderAuthError, match="no API key"):
        asyncio.run(provider.list_voices())
    keyed = OpenAIProvider.from_settings(config.load(providers={"openai": {"api_key": "sk-x"}}))
    assert keyed.configuration_problem() is None
    assert "sk-x" not in repr(keyed.settings)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ProviderRequestError),
        (422, ProviderRequestError),
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (404, ProviderNotFound),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_statuses_map_to_typed_errors(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    status: int,
    error: type[ProviderError],
    streaming: bool,
) -> None:
    job = await make_job(kokoro)
    fake_openai.inject_error(status, f"Kokoro says no ({status})")
    with pytest.raises(error) as caught:
        await speak(kokoro, job, streaming=streaming)
    assert type(caught.value) is error
    assert str(caught.value) == f"kokoro/kokoro: Kokoro says no ({status}) (HTTP {status})"
    assert caught.value.retryable is (status >= 500)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "bad voice", "type": "invalid_request_error"}},  # OpenAI
        {"detail": {"error": "validation_error", "message": "bad voice"}},  # Kokoro-FastAPI
        {"message": "bad voice"},
        {"detail": [{"loc": ["body", "voice"], "msg": "bad voice"}]},  # FastAPI validation
    ],
)
async def test_every_error_shape_is_quoted(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    body: dict[str, Any],
) -> None:
    job = await make_job(kokoro)
    fake_openai.script("POST", SPEECH, ScriptedResponse(400, body))
    with pytest.raises(ProviderRequestError, match=r"^kokoro/kokoro: bad voice \(HTTP 400\)$"):
        await kokoro.synthesize(job)


async def test_rate_limits_and_exhausted_quota(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    job = await make_job(kokoro)
    limited = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
    quota = {
        "error": {
            "message": "You exceeded your current quota",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
    fake_openai.script(
        "POST",
        SPEECH,
        ScriptedResponse(429, limited, {"retry-after-ms": "1500", "Retry-After": "2"}),
        ScriptedResponse(429, limited, {"x-ratelimit-reset": "20s"}),
        ScriptedResponse(429, quota),
    )
    with pytest.raises(RateLimited) as caught:
        await kokoro.synthesize(job)
    assert caught.value.retry_after_s == pytest.approx(1.5)
    with pytest.raises(RateLimited) as caught:
        await kokoro.synthesize(job)
    assert caught.value.retry_after_s == pytest.approx(20)
    with pytest.raises(InsufficientCredits, match="exceeded your current quota"):
        await kokoro.synthesize(job)


async def test_the_servers_own_validation_is_quoted(
    fake_openai: FakeOpenAISpeech,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = kokoro_settings(fake_openai, tmp_path, voices=["zz_ghost"])
    provider = OpenAIProvider.from_settings(settings, "kokoro")
    with pytest.raises(ProviderRequestError, match="Voice 'zz_ghost' not found"):
        await provider.synthesize(await make_job(provider, "zz_ghost"))
    await provider.aclose()


# -- streaming ---------------------------------------------------------------------------------


async def test_pcm_streams_in_whole_samples(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    fake_openai.chunk_bytes = 1001  # odd: samples split across chunks
    fake_openai.chunk_delay = 0.01  # so the pieces arrive apart
    text = "Sample by sample."
    chunks = [
        c.chunk
        async for c in kokoro.stream(await make_job(kokoro, text=text, response_format="pcm"))
    ]
    assert fake_openai.requests_to(SPEECH)[0].json["stream"] is True
    assert len(chunks) > 3
    assert all(len(c.data) % 2 == 0 for c in chunks)
    assert {(c.encoding, c.sample_rate, c.channels) for c in chunks} == {
        (AudioEncoding.PCM_S16LE, 24_000, 1)
    }
    assert b"".join(c.data for c in chunks) == tone_pcm(text)


async def test_first_chunk_arrives_before_the_body_ends(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    fake_openai.chunk_bytes = 4800  # 0.1 s of pcm
    fake_openai.chunk_delay = 0.1
    job = await make_job(kokoro, text="Ten chars.", response_format="pcm")  # 0.6 s: 6 chunks
    started = time.perf_counter()
    arrivals = [time.perf_counter() - started async for _ in kokoro.stream(job)]
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 0.4
    assert arrivals[0] < arrivals[-1] / 2


async def test_containers_come_as_one_file(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    fake_openai.chunk_bytes = 512
    chunks = [c.chunk async for c in kokoro.stream(await make_job(kokoro, response_format="wav"))]
    assert [c.encoding for c in chunks] == [AudioEncoding.WAV]
    assert chunks[0].data[:4] == b"RIFF"
    assert "stream" not in fake_openai.requests_to(SPEECH)[0].json


async def test_an_empty_stream_is_an_error(
    kokoro: OpenAIProvider,
    fake_openai: FakeOpenAISpeech,  # noqa: F811
) -> None:
    job = await make_job(kokoro)
    fake_openai.script("POST", SPEECH, ScriptedResponse(200, b"", content_type="audio/mpeg"))
    with pytest.raises(ProviderError, match="the stream held no audio"):
        [c.chunk async for c in kokoro.stream(job)]


# -- the whole way -----------------------------------------------------------------------------


async def test_real_speech_through_the_fake_and_the_pipeline(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    piper = PiperProvider.from_settings(config.load(data_dir=tmp_path / "data"))
    piper_voice = await piper.resolve_voice(None, None)

    async def speak_with_piper(text: str) -> tuple[bytes, int]:
        chunk = (await piper.synthesize(SynthesisJob("fake", text, piper_voice))).chunk
        return chunk.data, chunk.sample_rate  # 22050 Hz; the fake resamples to 24 kHz

    sentence = "Someone is waiting at the front door with a parcel for you."
    async with FakeOpenAISpeech(synthesizer=speak_with_piper, chunk_bytes=2048) as fake:
        speech = SpeechPipeline(kokoro_settings(fake, tmp_path, default_voice="am_adam"))
        try:
            request = SpeechRequest(text=sentence, provider="kokoro")
            utterance = await speech.speak(request)
        finally:
            await speech.aclose()
        assert fake.requests_to(SPEECH)[0].json["stream"] is True  # mp3 chunks, joined
    assert utterance.voice.label == "kokoro/kokoro/am_adam"
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(sentence, heard) <= 0.2, heard
