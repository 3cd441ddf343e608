"""The Together AI provider against the simulated Together server (tests/fakes/together.py).

Over 450 lines: four models, both stream shapes, every documented status.
"""

from __future__ import annotations

import io
import logging
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import (
    ConfigError,
    InsufficientCredits,
    InvalidOptions,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
    SynthesisFailed,
    UnknownModel,
    UnknownVoice,
)
from bot.ops import config
from bot.providers.base import Provider, ProviderRegistry, SynthesisJob, Usage
from bot.speech import AudioChunk, AudioEncoding, SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from integrations.piper import PiperProvider
from integrations.together import TogetherProvider
from integrations.together.provider import InvalidVoiceMix
from tests.fakes import FakeTogether, ScriptedResponse
from tests.fakes.audio import resample, tone_synthesizer
from tests.fakes.fixtures import fake_together  # noqa: F401
from tests.fakes.together import voice_id
from tests.support.asr import Transcriber, word_error_rate

KEY = "test-together-key"
KOKORO = "hexgrad/Kokoro-82M"
ORPHEUS = "canopylabs/orpheus-3b-0.1-ft"
SONIC = "cartesia/sonic"
SPEECH = "/v1/audio/speech"
TEXT = "Today has been exhausting. <sigh>"


def together_settings(fake: FakeTogether, tmp_path: Path, **section: Any) -> config.Settings:
    section = {"base_url": fake.base_url, "api_key": KEY, **section}
    return config.load(data_dir=tmp_path / "data", providers={"together": section})


@pytest.fixture
async def together(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TogetherProvider]:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    provider = TogetherProvider.from_settings(together_settings(fake_together, tmp_path))
    yield provider
    await provider.aclose()


async def make_job(provider: TogetherProvider, voice: str | None = None, model: str | None = None,
              text: str = TEXT, **options: Any) -> SynthesisJob:  # fmt: skip
    chosen = await provider.resolve_voice(voice, model)
    return SynthesisJob("r1", text, chosen, provider.validate_options(chosen, options))


async def speak(provider: Provider, job: SynthesisJob, *, streaming: bool) -> list[AudioChunk]:
    """All the audio of ``job``, through :meth:`stream` or :meth:`synthesize`."""
    if streaming:
        return [piece.chunk async for piece in provider.stream(job)]
    return [(await provider.synthesize(job)).chunk]


def tone_pcm(text: str, rate: int = 24_000) -> bytes:
    pcm, native = tone_synthesizer(text)
    return resample(pcm, native, rate)


# -- request shapes ----------------------------------------------------------------------------


async def test_default_request_is_exactly_the_documented_shape(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    chunk = (await together.synthesize(await make_job(together))).chunk
    voices_call, speech_call = fake_together.requests
    assert (voices_call.method, voices_call.path, voices_call.query) == (
        "GET",
        "/v1/voices",
        {"model": KOKORO},
    )
    assert speech_call.method == "POST"
    assert speech_call.path == SPEECH
    assert speech_call.headers["authorization"] == "Bearer <redacted>"  # the fake's log
    assert speech_call.headers["content-type"] == "application/json"
    # Nothing undocumented, sound tags untouched; wav is the API's default format.
    assert speech_call.json == {
        "model": KOKORO,
        "input": TEXT,
        "voice": "af_heart",
        "response_format": "wav",
        "language": "en",
    }
    assert chunk.encoding is AudioEncoding.WAV
    with wave.open(io.BytesIO(chunk.data)) as audio:
        assert (audio.getframerate(), audio.getnchannels()) == (24_000, 1)
        assert audio.readframes(audio.getnframes()) == tone_pcm(TEXT)
    assert fake_together.billed_calls == 1


@pytest.mark.parametrize(
    ("model", "voice", "options", "extra", "encoding", "rate"),
    [
        pytest.param(
            SONIC,
            "friendly sidekick",
            {"response_format": "mp3", "sample_rate": 22050, "bit_rate": 64000},
            {"response_format": "mp3", "language": "en", "sample_rate": 22050, "bit_rate": 64000},
            AudioEncoding.MP3,
            22050,
            id="cartesia-mp3",
        ),
        pytest.param(
            SONIC,
            "Newsman",
            {"response_format": "raw", "response_encoding": "pcm_f32le", "sample_rate": 16000},
            {
                "response_format": "raw",
                "response_encoding": "pcm_f32le",
                "language": "en",
                "sample_rate": 16000,
            },
            AudioEncoding.PCM_F32LE,
            16000,
            id="cartesia-raw-f32",
        ),
        pytest.param(
            "cartesia/sonic-2",
            "laidback woman",
            {"response_format": "raw", "language": "fr"},
            {
                "response_format": "raw",
                "response_encoding": "pcm_s16le",
                "language": "fr",
                "sample_rate": 44100,
            },
            AudioEncoding.PCM_S16LE,
            44100,
            id="cartesia-2-raw-default",
        ),
        pytest.param(
            ORPHEUS,
            "tara",
            {"response_format": "raw"},
            {"response_format": "raw", "response_encoding": "pcm_s16le", "language": "en"},
            AudioEncoding.PCM_S16LE,
            24000,
            id="orpheus-raw",
        ),
        pytest.param(
            KOKORO,
            "af_bella",
            {"response_format": "raw", "sample_rate": 24000, "language": "ja"},
            {
                "response_format": "raw",
                "response_encoding": "pcm_s16le",
                "language": "ja",
                "sample_rate": 24000,
            },
            AudioEncoding.PCM_S16LE,
            24000,
            id="kokoro-raw",
        ),
    ],
)
async def test_request_shape_and_audio_per_model(  # noqa: PLR0913 - fixtures + parametrize columns
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
    model: str,
    voice: str,
    options: dict[str, Any],
    extra: dict[str, Any],
    encoding: AudioEncoding,
    rate: int,
) -> None:
    text = "Hello."
    chunk = (
        await together.synthesize(await make_job(together, voice, model, text, **options))
    ).chunk
    (sent,) = fake_together.requests_to(SPEECH)
    # Cartesia voices go by the id the voice list gives; the others are their own id.
    expected_voice = voice_id(model, voice.lower())
    assert sent.json == {"model": model, "input": text, "voice": expected_voice, **extra}
    assert (chunk.encoding, chunk.sample_rate, chunk.channels) == (encoding, rate, 1)
    if encoding.is_raw_pcm:
        assert chunk.duration_s == pytest.approx(len(tone_pcm(text, rate)) / 2 / rate)
        if encoding is AudioEncoding.PCM_S16LE:
            assert chunk.data == tone_pcm(text, rate)


# -- options, voices, mixes: refused before any request ----------------------------------------


@pytest.mark.parametrize(
    ("model", "options", "problem"),
    [
        (KOKORO, {"sample_rate": 44100}, "sample_rate: Input should be 24000"),
        (ORPHEUS, {"response_format": "raw", "response_encoding": "pcm_f32le"}, "pcm_s16le"),
        (KOKORO, {"bit_rate": 64000}, "bit_rate: unknown option"),
        (SONIC, {"bit_rate": 64000}, "bit_rate only applies when response_format is 'mp3'"),
        (SONIC, {"response_format": "mp3", "bit_rate": 100000}, "bit_rate: Input should be"),
        (SONIC, {"response_encoding": "pcm_s16le"}, "only applies when response_format is 'raw'"),
        (SONIC, {"sample_rate": 4000}, "sample_rate: Input should be greater than or equal"),
        (SONIC, {"response_format": "ogg"}, "response_format: Input should be"),
        (KOKORO, {"language": "xx"}, "language: Input should be"),
        (KOKORO, {"speed": 1.2}, "speed: unknown option"),
    ],
)
async def test_invalid_options_never_reach_the_api(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
    model: str,
    options: dict[str, Any],
    problem: str,
) -> None:
    speech = SpeechPipeline(together_settings(fake_together, tmp_path))
    try:
        await speech.registry.get("together").resolve_voice(None, model)  # voice list cached
        fake_together.requests.clear()
        request = SpeechRequest(text="Hi.", provider="together", model=model, options=options)
        with pytest.raises(InvalidOptions) as caught:
            await speech.speak(request)
    finally:
        await speech.aclose()
    assert problem in str(caught.value)
    assert f"together/{model}" in str(caught.value)
    assert fake_together.requests == []


async def test_voices_by_id_or_name_and_per_model_defaults(together: TogetherProvider) -> None:
    assert (await together.resolve_voice(None, None)).id == "af_heart"
    assert (await together.resolve_voice(None, ORPHEUS)).id == "tara"
    sidekick = await together.resolve_voice("Friendly Sidekick", SONIC)
    assert sidekick.id == voice_id(SONIC, "friendly sidekick")
    assert (await together.resolve_voice(sidekick.id, SONIC)).name == "friendly sidekick"
    # No model named: a voice of another model is found there.
    tara = await together.resolve_voice("tara", None)
    assert (tara.provider, tara.model) == ("together", ORPHEUS)
    with pytest.raises(UnknownModel, match="cartesia/sonic"):
        await together.resolve_voice(None, "cartesia/sonik")


async def test_unknown_voice_is_refused_with_suggestions(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    await together.resolve_voice(None, None)
    fake_together.requests.clear()
    with pytest.raises(UnknownVoice) as caught:
        await together.resolve_voice("af_hart", KOKORO)
    assert "did you mean 'af_heart'" in str(caught.value)
    assert "af_alloy" in str(caught.value)
    assert fake_together.requests == []


async def test_kokoro_mixes_are_checked_and_sent(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    plain = await together.resolve_voice("af_bella + AF_HEART", None)
    weighted = await together.resolve_voice("af_bella(2)+af_heart(1.5)", KOKORO)
    assert plain.id == "af_bella+af_heart"
    assert weighted.id == "af_bella(2)+af_heart(1.5)"
    await together.synthesize(SynthesisJob("r", "Hi.", weighted, {}))
    (sent,) = fake_together.requests_to(SPEECH)
    assert sent.json["voice"] == "af_bella(2)+af_heart(1.5)"  # and the fake accepted it


@pytest.mark.parametrize(
    ("model", "mix", "component", "message"),
    [
        (KOKORO, "af_bella+af_nope", "af_nope", "unknown voice 'af_nope'"),
        (KOKORO, "af_bella(0)+af_heart", "af_bella(0)", "weight must be a positive number"),
        (KOKORO, "af_bella(-1)+af_heart", "af_bella(-1)", "weight must be a positive number"),
        (KOKORO, "af_bella(x)+af_heart", "af_bella(x)", "weight must be a positive number"),
        (KOKORO, "af_bella+", "", "'name' or 'name(weight)'"),
        (KOKORO, "af_bella(2)", "af_bella(2)", "two or more voices"),
        (ORPHEUS, "tara+leah", "tara+leah", "only hexgrad/Kokoro-82M mixes voices"),
    ],
)
async def test_bad_mixes_never_reach_the_api(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
    model: str,
    mix: str,
    component: str,
    message: str,
) -> None:
    await together.resolve_voice(None, model)
    fake_together.requests.clear()
    with pytest.raises(InvalidVoiceMix) as caught:
        await together.resolve_voice(mix, model)
    assert caught.value.component == component
    assert f"voice mix {mix!r}" in str(caught.value)
    assert message in str(caught.value)
    if "unknown voice" in message:
        assert "allowed: af_alloy" in str(caught.value)
    assert fake_together.requests == []


async def test_voice_lists_are_cached_per_model(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    voices = await together.list_voices()
    listed = fake_together.requests_to("/v1/voices")
    assert [r.query["model"] for r in listed] == [KOKORO, ORPHEUS, SONIC, "cartesia/sonic-2"]
    assert voices[0] == Voice("together", KOKORO, "af_alloy", "af_alloy")
    assert {v.model for v in voices} == {KOKORO, ORPHEUS, SONIC, "cartesia/sonic-2"}
    fake_together.requests.clear()
    assert await together.list_voices() == voices
    await together.resolve_voice("leah", ORPHEUS)
    assert fake_together.requests == []


async def test_a_model_without_a_voice_list_is_left_out(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    for model in (KOKORO, ORPHEUS, SONIC):
        await together.resolve_voice(None, model)
    missing = {"error": {"message": "Unknown model cartesia/sonic-2"}}
    fake_together.script("GET", "/v1/voices", *[ScriptedResponse(404, missing)] * 2)
    voices = await together.list_voices()
    assert {v.model for v in voices} == {KOKORO, ORPHEUS, SONIC}
    with pytest.raises(ProviderNotFound, match="Unknown model cartesia/sonic-2"):
        await together.resolve_voice(None, "cartesia/sonic-2")


async def test_voice_cache_expires_after_its_ttl(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = TogetherProvider.from_settings(
        together_settings(fake_together, tmp_path, voices_ttl_s=60)
    )
    now = time.monotonic()
    monkeypatch.setattr("integrations.together.provider.time.monotonic", lambda: now)
    await provider.resolve_voice(None, None)
    await provider.resolve_voice(None, None)
    assert len(fake_together.requests_to("/v1/voices")) == 1
    monkeypatch.setattr("integrations.together.provider.time.monotonic", lambda: now + 61)
    await provider.resolve_voice(None, None)
    assert len(fake_together.requests_to("/v1/voices")) == 2
    await provider.aclose()


# -- keys --------------------------------------------------------------------------------------


async def test_without_a_key_nothing_is_sent(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    settings = together_settings(fake_together, tmp_path, api_key=None)
    provider = TogetherProvider.from_settings(settings)
    assert "TOGETHER_API_KEY" in (provider.configuration_problem() or "")
    with pytest.raises(ProviderAuthError, match="TOGETHER_API_KEY"):
        await provider.list_voices()
    voice = Voice("together", KOKORO, "af_heart", "af_heart")
    with pytest.raises(ProviderAuthError, match="TOGETHER_API_KEY"):
        await provider.synthesize(SynthesisJob("r", "Hi.", voice))
    assert fake_together.requests == []
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    from_env = TogetherProvider.from_settings(settings)
    assert from_env.configuration_problem() is None
    assert (await from_env.resolve_voice(None, None)).id == "af_heart"
    await from_env.aclose()


async def test_the_key_never_shows_in_logs_settings_or_errors(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-never-print-me"
    provider = TogetherProvider.from_settings(
        together_settings(fake_together, tmp_path, api_key=secret)
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderAuthError) as caught:  # the fake knows another key: 401
        await provider.list_voices()
    assert caught.value.status == 401
    assert "Invalid API key provided" in str(caught.value)
    assert fake_together.requests[0].headers["authorization"] == "Bearer <redacted>"
    for text in (str(caught.value), caplog.text, repr(provider.settings), str(provider.settings)):
        assert secret not in text
    await provider.aclose()


def test_unknown_default_model_is_a_configuration_error() -> None:
    settings = config.load(providers={"together": {"default_model": "kokoro"}})
    with pytest.raises(ConfigError, match="default_model: Value error, unknown model"):
        TogetherProvider.from_settings(settings)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (400, ProviderRequestError, False),
        (422, ProviderRequestError, False),
        (401, ProviderAuthError, False),
        (403, ProviderAuthError, False),
        (402, InsufficientCredits, False),
        (404, ProviderNotFound, False),
        (500, ProviderUnavailable, True),
        (502, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_statuses_map_to_typed_errors(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
    status: int,
    error: type[ProviderError],
    retryable: bool,
    streaming: bool,
) -> None:
    job = await make_job(together)
    fake_together.inject_error(status, f"Server says no ({status})")
    with pytest.raises(error) as caught:
        await speak(together, job, streaming=streaming)
    assert type(caught.value) is error
    message = str(caught.value)
    assert message.startswith(f"together/{KOKORO}: Server says no ({status})")
    assert f"(HTTP {status})" in message
    assert caught.value.retryable is retryable
    assert KEY not in message
    assert fake_together.billed_calls == 0


async def test_overload_and_rate_limit_helpers(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    job = await make_job(together)
    fake_together.inject_overload()
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        await together.synthesize(job)
    fake_together.inject_rate_limit(retry_after=2.5)  # Retry-After: 3, retry-after-ms: 2500
    with pytest.raises(RateLimited) as caught:
        await together.synthesize(job)
    assert caught.value.retry_after_s == pytest.approx(2.5)  # retry-after-ms wins
    assert "Rate limit exceeded; retry after 2.5 s" in str(caught.value)
    fake_together.script(
        "POST", SPEECH, ScriptedResponse(429, {"error": {"message": "slow"}}, {"Retry-After": "7"})
    )
    with pytest.raises(RateLimited) as caught:
        await together.synthesize(job)
    assert caught.value.retry_after_s == 7


async def test_the_servers_own_rate_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    async with FakeTogether(rate_limit_per_minute=1) as fake:
        provider = TogetherProvider.from_settings(together_settings(fake, tmp_path))
        job = await make_job(provider)
        await provider.synthesize(job)
        with pytest.raises(RateLimited) as caught:
            await provider.synthesize(job)
        await provider.aclose()
    assert caught.value.retry_after_s == pytest.approx(60, abs=1)
    assert "1 requests per minute" in str(caught.value)


async def test_a_json_answer_is_not_audio(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    job = await make_job(together)
    fake_together.script("POST", SPEECH, ScriptedResponse(200, {"error": {"message": "odd"}}))
    with pytest.raises(SynthesisFailed, match="the response is not audio: odd"):
        await together.synthesize(job)


# -- streaming ---------------------------------------------------------------------------------


async def test_the_rate_limit_headroom_comes_with_the_audio(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    limit = fake_together.limiter.limit
    assert limit is not None
    pieces = [piece async for piece in together.stream(await make_job(together))]
    assert len(pieces) > 1
    assert pieces[0].usage == Usage(rate_limit_remaining=limit - 1, rate_limit_reset_s=60)
    assert all(piece.usage is None for piece in pieces[1:])  # told once, with the first piece
    plain = await together.synthesize(await make_job(together, response_format="wav"))
    assert plain.usage == Usage(rate_limit_remaining=limit - 2, rate_limit_reset_s=60)


@pytest.mark.parametrize("shape", ["delta", "b64"])
async def test_stream_reads_both_event_shapes(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
    shape: Any,
) -> None:
    fake_together.chunk_shape = shape
    chunks = [c.chunk async for c in together.stream(await make_job(together))]
    (sent,) = fake_together.requests_to(SPEECH)
    assert sent.json == {
        "model": KOKORO,
        "input": TEXT,
        "voice": "af_heart",
        "response_format": "raw",
        "language": "en",
        "response_encoding": "pcm_s16le",
        "stream": True,
    }
    assert len(chunks) > 5  # 0.1 s per event
    assert {(c.encoding, c.sample_rate, c.channels) for c in chunks} == {
        (AudioEncoding.PCM_S16LE, 24_000, 1)
    }
    assert b"".join(c.data for c in chunks) == tone_pcm(TEXT)
    assert fake_together.streams_finished == 1


async def test_cartesia_streams_at_the_rate_asked_for(together: TogetherProvider) -> None:
    job = await make_job(together, "newsman", SONIC, "Hi there.", sample_rate=16000)
    chunks = [c.chunk async for c in together.stream(job)]
    assert {(c.encoding, c.sample_rate) for c in chunks} == {(AudioEncoding.PCM_S16LE, 16000)}
    assert b"".join(c.data for c in chunks) == tone_pcm("Hi there.", 16000)


async def test_wav_or_mp3_or_stream_off_is_one_plain_call(
    fake_together: FakeTogether,  # noqa: F811
    tmp_path: Path,
) -> None:
    provider = TogetherProvider.from_settings(
        together_settings(fake_together, tmp_path, stream=False)
    )
    chunks = [c.chunk async for c in provider.stream(await make_job(provider))]
    assert [c.encoding for c in chunks] == [AudioEncoding.WAV]
    assert "stream" not in fake_together.requests_to(SPEECH)[0].json
    streaming = TogetherProvider.from_settings(together_settings(fake_together, tmp_path))
    job = await make_job(streaming, "newsman", SONIC, "Hi.", response_format="mp3")
    assert [c.chunk.encoding async for c in streaming.stream(job)] == [AudioEncoding.MP3]
    assert fake_together.requests_to(SPEECH)[-1].json["response_format"] == "mp3"
    await provider.aclose()
    await streaming.aclose()


async def test_first_chunk_arrives_before_the_server_finishes(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    fake_together.chunk_delay = 0.1
    job = await make_job(together, text="Ten chars.")  # 0.6 s of audio: 6 events over 0.5 s
    started = time.perf_counter()
    arrivals: list[float] = []
    finished_at_first: int | None = None
    async for _chunk in together.stream(job):
        arrivals.append(time.perf_counter() - started)
        if finished_at_first is None:
            finished_at_first = fake_together.streams_finished
    assert finished_at_first == 0  # the server was still sending
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 0.4
    assert arrivals[0] < arrivals[-1] / 2


async def test_an_error_event_mid_stream_fails_the_synthesis(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    fake_together.inject_stream_error(after_chunks=2, message="Inference failed on GPU 3")
    received: list[AudioChunk] = []

    async def listen() -> None:
        async for piece in together.stream(job):
            received.append(piece.chunk)

    job = await make_job(together)
    with pytest.raises(SynthesisFailed) as caught:
        await listen()
    assert len(received) == 2
    assert str(caught.value) == f"together/{KOKORO}: the stream failed: Inference failed on GPU 3"
    assert caught.value.retryable is False


def sse(*events: str, content_type: str = "text/event-stream") -> ScriptedResponse:
    return ScriptedResponse(200, "".join(events), content_type=content_type)


PCM_A, PCM_B = b"\x01\x00\x02\x00\x03\x00", b"\x04\x00\x05\x00"
DELTA_A = 'data: {"type": "x", "delta": "AQACAAMA"}\n\n'  # PCM_A


async def test_stream_parser_accepts_what_server_sent_events_allow(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
) -> None:
    job = await make_job(together)
    body = (
        ": keep-alive comment\r\n\r\n",
        'event: audio\r\nid: 1\r\ndata: {"object": "audio.tts.chunk", "b64": "AQACAAMA"}\r\n\r\n',
        'data: {"type": "conversation.item.audio_output.done"}\n\n',  # no audio in it
        'data: {"object": "audio.tts.chunk",\ndata: "b64": "BAAFAA=="}\n\n',  # two data lines
        "data: [DONE]\n\n",
    )
    fake_together.script("POST", SPEECH, sse(*body))
    chunks = [c.chunk.data async for c in together.stream(job)]
    assert chunks == [PCM_A, PCM_B]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (sse(DELTA_A), "ended without data: [DONE]"),
        (sse(DELTA_A, "data: not json\n\n"), "unreadable stream event"),
        (sse('data: {"delta": "%%%"}\n\n'), "not base64"),
        (sse(DELTA_A, 'data: {"error": "quota gone"}\n\n'), "the stream failed: quota gone"),
        (sse(DELTA_A, content_type="audio/wav"), "expected server-sent events"),
    ],
)
async def test_broken_streams_are_errors_not_truncation(
    together: TogetherProvider,
    fake_together: FakeTogether,  # noqa: F811
    response: ScriptedResponse,
    message: str,
) -> None:
    job = await make_job(together)
    fake_together.script("POST", SPEECH, response)
    with pytest.raises(SynthesisFailed, match=message.replace("[", r"\[").replace("]", r"\]")):
        [c.chunk async for c in together.stream(job)]


# -- the whole way -----------------------------------------------------------------------------


async def test_registry_knows_together(tmp_path: Path) -> None:
    registry = ProviderRegistry.default(config.load(data_dir=tmp_path))
    assert "together" in registry.names()
    assert isinstance(registry.get("together"), TogetherProvider)
    await registry.aclose()


async def test_real_speech_through_the_fake_and_the_pipeline(
    tmp_path: Path, transcriber: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    piper_settings = config.load(data_dir=tmp_path / "data")
    piper = PiperProvider.from_settings(piper_settings)
    piper_voice = await piper.resolve_voice(None, None)

    async def speak_with_piper(text: str) -> tuple[bytes, int]:
        chunk = (await piper.synthesize(SynthesisJob("fake", text, piper_voice))).chunk
        return chunk.data, chunk.sample_rate  # 22050 Hz; the fake resamples to Kokoro's 24 kHz

    sentence = "The washing machine has finished and the laundry is ready to hang."
    async with FakeTogether(synthesizer=speak_with_piper) as fake:
        speech = SpeechPipeline(together_settings(fake, tmp_path))
        try:
            utterance = await speech.speak(SpeechRequest(text=sentence, provider="together"))
        finally:
            await speech.aclose()
        assert fake.streams_finished == 1
    assert utterance.voice.label == f"together/{KOKORO}/af_heart"
    assert (utterance.sample_rate, utterance.channels) == (48_000, 2)
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(sentence, heard) <= 0.2, heard
