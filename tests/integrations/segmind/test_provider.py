"""The Segmind provider against the simulated Segmind API (tests/fakes/segmind.py).

Over 450 lines: four models, v1 and v2, every documented status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import (
    ConfigError,
    InsufficientCredits,
    InvalidOptions,
    JobExpired,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
    SynthesisFailed,
    UnknownVoice,
)
from bot.ops import config
from bot.providers.base import SynthesisJob, Synthesized
from bot.speech import AudioChunk, AudioEncoding, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.segmind import SegmindProvider
from integrations.segmind.models import CHATTERBOX_SAMPLE, OPENVOICE_SAMPLE, TURBO_SAMPLE
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.asr import Transcriber, word_error_rate
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.speech import piper_pcm

KEY = DEFAULT_API_KEY


def make_provider(fake: FakeSegmind, **section: Any) -> SegmindProvider:
    settings = config.load(
        providers={"segmind": {"api_key": KEY, "base_url": fake.base_url, **section}}
    )
    return SegmindProvider.from_settings(settings)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind() as server:
        yield server


@pytest.fixture
async def segmind(fake: FakeSegmind) -> AsyncIterator[SegmindProvider]:
    provider = make_provider(fake)
    yield provider
    await provider.aclose()


async def say(
    provider: SegmindProvider,
    text: str,
    voice: str | None = None,
    model: str | None = None,
    **options: Any,
) -> AudioChunk:
    return (await synthesize(provider, text, voice, model, **options)).chunk


async def synthesize(
    provider: SegmindProvider,
    text: str,
    voice: str | None = None,
    model: str | None = None,
    **options: Any,
) -> Synthesized:
    resolved = await provider.resolve_voice(voice, model)
    valid = provider.validate_options(resolved, options)
    return await provider.synthesize(SynthesisJob("req-1", text, resolved, valid))


# -- request shapes ------------------------------------------------------------------------


async def test_orpheus_request_shape(fake: FakeSegmind, segmind: SegmindProvider) -> None:
    chunk = await say(segmind, "Well <sigh> here we go.", "tara", temperature=0.9)
    assert chunk.encoding is AudioEncoding.WAV
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/orpheus-3b-0.1")
    assert request.headers["x-api-key"] == "<redacted>"
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "text": "Well <sigh> here we go.",  # sound tags pass through untouched
        "voice": "tara",
        "temperature": 0.9,
        "top_p": 0.95,
        "max_new_tokens": 1200,
        "repetition_penalty": 1.1,
    }


async def test_chatterbox_default_voice_sends_segmind_sample(
    fake: FakeSegmind, segmind: SegmindProvider
) -> None:
    await say(segmind, "Hello.")
    assert fake.requests[0].path == "/v1/chatterbox-tts"
    assert fake.requests[0].json == {
        "text": "Hello.",
        "reference_audio": CHATTERBOX_SAMPLE,
        "exaggeration": 0.5,
        "cfg_weight": 0.5,
        "temperature": 0.8,
        "seed": 42,
        "min_p": 0.05,
        "top_p": 1.0,
        "repetition_penalty": 1.2,
    }


async def test_cloning_voice_from_a_url(fake: FakeSegmind, segmind: SegmindProvider) -> None:
    url = "https://example.com/grandma.mp3"
    await say(segmind, "Hello [laugh].", url, "chatterbox-turbo-tts")
    submit = fake.requests_to("/v2/chatterbox-turbo-tts")[0]
    assert submit.json == {
        "text": "Hello [laugh].",
        "reference_audio": url,
        "temperature": 0.7,
        "top_k": 500,
        "top_p": 0.9,
        "min_p": 0.0,
        "repetition_penalty": 1.3,
        "seed": 42,
        "norm_loudness": True,
    }
    assert TURBO_SAMPLE not in str(submit.json)


async def test_openvoice_goes_through_v2(fake: FakeSegmind, segmind: SegmindProvider) -> None:
    chunk = await say(segmind, "Bonjour.", None, "openvoice", language="FR", speed=1.2)
    assert chunk.data
    submit = fake.requests_to("/v2/openvoice")[0]
    assert submit.json == {
        "text": "Bonjour.",
        "input_audio": OPENVOICE_SAMPLE,
        "speed": 1.2,
        "language": "FR",
    }
    paths = [r.path for r in fake.requests]
    assert paths[0] == "/v2/openvoice"
    assert any(p.endswith("/status") for p in paths)
    assert any(p.startswith("/media/") for p in paths)
    media = next(r for r in fake.requests if r.path.startswith("/media/"))
    assert "x-api-key" not in media.headers  # the key stays with the API


async def test_v1_models_can_be_moved_to_v2(fake: FakeSegmind) -> None:
    provider = make_provider(fake, v2_models=[])
    try:
        await say(provider, "Hello.", None, "openvoice")
    finally:
        await provider.aclose()
    assert [r.path for r in fake.requests] == ["/v1/openvoice"]


# -- options and voices are checked before any call ----------------------------------------


@pytest.mark.parametrize(
    ("model", "voice", "options", "words"),
    [
        ("orpheus-3b-0.1", "tara", {"temperature": 1.6}, "temperature"),
        ("orpheus-3b-0.1", "tara", {"max_new_tokens": 99}, "max_new_tokens"),
        ("orpheus-3b-0.1", "tara", {"speed": 1}, "speed: unknown option"),
        ("chatterbox-tts", None, {"exaggeration": 2.5}, "exaggeration"),
        ("chatterbox-tts", None, {"reference_audio": "not a url"}, "reference_audio"),
        ("chatterbox-turbo-tts", None, {"top_k": 1001}, "top_k"),
        ("openvoice", None, {"language": "DE"}, "language"),
        ("openvoice", None, {"speed": 0.4}, "speed"),
    ],
)
async def test_bad_options_never_reach_the_network(
    fake: FakeSegmind,
    segmind: SegmindProvider,
    model: str,
    voice: str | None,
    options: dict[str, Any],
    words: str,
) -> None:
    resolved = await segmind.resolve_voice(voice, model)
    with pytest.raises(InvalidOptions, match=words):
        segmind.validate_options(resolved, options)
    assert fake.requests == []


async def test_unknown_voice_lists_the_model_voices(segmind: SegmindProvider) -> None:
    with pytest.raises(UnknownVoice, match="did you mean 'tara'"):
        await segmind.resolve_voice("tarra", "orpheus-3b-0.1")
    with pytest.raises(UnknownVoice):
        await segmind.resolve_voice("https://example.com/x.mp3", "orpheus-3b-0.1")


async def test_voice_without_model_finds_its_model(segmind: SegmindProvider) -> None:
    assert (await segmind.resolve_voice("emma", None)).model == "orpheus-3b-0.1"
    assert (await segmind.resolve_voice(None, None)).model == "chatterbox-tts"
    # the provider's default voice belongs to another model: the model's own default speaks
    assert (await segmind.resolve_voice(None, "orpheus-3b-0.1")).id == "dan"


async def test_missing_key_is_a_configuration_error(
    fake: FakeSegmind, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    settings = config.load(providers={"segmind": {"base_url": fake.base_url}})
    pipeline = SpeechPipeline(settings)
    try:
        with pytest.raises(ConfigError, match="SEGMIND_API_KEY"):
            await pipeline.speak(SpeechRequest(text="hi", provider="segmind"))
    finally:
        await pipeline.aclose()
    assert fake.requests == []


async def test_key_from_segmind_api_key(fake: FakeSegmind, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    provider = SegmindProvider.from_settings(
        config.load(providers={"segmind": {"base_url": fake.base_url}})
    )
    try:
        assert (await say(provider, "Hi.")).data
    finally:
        await provider.aclose()


# -- every documented status becomes its typed error ---------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (400, ProviderRequestError, False),
        (403, ProviderAuthError, False),
        (404, ProviderNotFound, False),
        (500, ProviderUnavailable, True),
        (502, ProviderUnavailable, True),
        (504, ProviderUnavailable, True),
    ],
)
async def test_statuses_map_to_typed_errors(
    fake: FakeSegmind,
    segmind: SegmindProvider,
    status: int,
    error: type[ProviderError],
    retryable: bool,
) -> None:
    fake.inject_error("/v1/chatterbox-tts", status, f"server says {status}")
    with pytest.raises(error) as caught:
        await say(segmind, "Hello.")
    message = str(caught.value)
    assert f"segmind/chatterbox-tts: server says {status} (HTTP {status})" == message
    assert caught.value.retryable is retryable
    assert KEY not in message


async def test_a_named_instance_reports_status_errors_under_its_own_name(
    fake: FakeSegmind,
) -> None:
    settings = config.load(
        providers={"pro": {"type": "segmind", "api_key": KEY, "base_url": fake.base_url}}
    )
    provider = SegmindProvider.from_settings(settings, "pro")
    fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
    try:
        with pytest.raises(InsufficientCredits) as caught:
            await say(provider, "Hello.")
    finally:
        await provider.aclose()
    assert caught.value.provider == "pro"
    assert str(caught.value) == "pro/chatterbox-tts: Insufficient credits (HTTP 406)"


async def test_wrong_key_is_an_auth_error(fake: FakeSegmind) -> None:
    provider = SegmindProvider.from_settings(
        config.load(providers={"segmind": {"api_key": "sk-wrong", "base_url": fake.base_url}})
    )
    try:
        with pytest.raises(ProviderAuthError, match="HTTP 401") as caught:
            await say(provider, "Hello.")
    finally:
        await provider.aclose()
    assert "sk-wrong" not in str(caught.value)


async def test_insufficient_credits_is_406_and_not_billed() -> None:
    async with FakeSegmind(credits=0.01) as fake:
        provider = make_provider(fake)
        try:
            with pytest.raises(InsufficientCredits, match="HTTP 406"):
                await say(provider, "Hello.")
        finally:
            await provider.aclose()
        assert fake.billed_calls == 0


async def test_rate_limit_carries_the_reset_hint() -> None:
    async with FakeSegmind(rate_limit_per_minute=1) as fake:
        provider = make_provider(fake)
        try:
            await say(provider, "One.")
            with pytest.raises(RateLimited) as caught:
                await say(provider, "Two.")
        finally:
            await provider.aclose()
    assert caught.value.retry_after_s is not None
    assert 0 < caught.value.retry_after_s <= 61  # the reset instant has whole seconds
    assert caught.value.retryable


async def test_unreachable_api_is_unavailable() -> None:
    async with FakeSegmind() as fake:
        base = fake.base_url
    provider = SegmindProvider.from_settings(
        config.load(providers={"segmind": {"api_key": KEY, "base_url": base}})
    )
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach the API"):
            await say(provider, "Hello.")
    finally:
        await provider.aclose()


async def test_a_v2_submit_never_sent_stays_retryable() -> None:
    """No connection, so no job: unlike a submit that got no answer, it may be sent again."""
    async with FakeSegmind() as fake:
        base = fake.base_url
    provider = SegmindProvider.from_settings(
        config.load(providers={"segmind": {"api_key": KEY, "base_url": base}})
    )
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach the API") as caught:
            await say(provider, "Hello.", None, "openvoice")
    finally:
        await provider.aclose()
    assert caught.value.retryable


# -- response bodies and accounting --------------------------------------------------------


@pytest.mark.parametrize("mode", ["json_url", "json_base64"])
async def test_json_bodies_carry_url_or_base64(mode: str) -> None:
    async with FakeSegmind(sync_response=mode) as fake:  # type: ignore[arg-type]
        provider = make_provider(fake)
        try:
            chunk = await say(provider, "Hello there.")
        finally:
            await provider.aclose()
    assert chunk.encoding is AudioEncoding.WAV
    assert chunk.data[:4] == b"RIFF"


async def test_mp3_bodies_are_recognised() -> None:
    async with FakeSegmind(audio_format="mp3", audio_content_type="application/octet-stream") as f:
        provider = make_provider(f)
        try:
            chunk = await say(provider, "Hello there.")
        finally:
            await provider.aclose()
    assert chunk.encoding is AudioEncoding.MP3


async def test_cost_and_remaining_credits_are_recorded(
    fake: FakeSegmind, segmind: SegmindProvider
) -> None:
    await say(segmind, "Hello.")
    assert segmind.last_cost == pytest.approx(0.02)
    assert segmind.remaining_credits == pytest.approx(fake.remaining_credits)
    await say(segmind, "Hello.", None, "openvoice")  # v2: from the result's metrics
    assert segmind.remaining_credits == pytest.approx(fake.remaining_credits)


@pytest.mark.parametrize("model", ["chatterbox-tts", "openvoice"])  # v1 headers, v2 metrics
async def test_the_usage_comes_back_with_the_audio(
    fake: FakeSegmind, segmind: SegmindProvider, model: str
) -> None:
    before = fake.remaining_credits
    result = await synthesize(segmind, "Hello.", None, model)
    assert result.chunk.data
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(before - fake.remaining_credits)
    assert result.usage.remaining_credits == pytest.approx(fake.remaining_credits)


# -- the v2 queue --------------------------------------------------------------------------


async def test_v2_progresses_through_the_queue(fake: FakeSegmind, segmind: SegmindProvider) -> None:
    fake.v2_queued_polls = 2
    fake.v2_processing_polls = 2
    await say(segmind, "Hello.", None, "openvoice")
    (job,) = fake.jobs.values()
    assert job.status == "COMPLETED"
    assert len(fake.requests_to(f"/v2/requests/{job.request_id}/status")) == 5
    assert len(fake.requests_to("/v2/openvoice")) == 1


async def test_failed_job_is_synthesis_failed_with_segmind_reason(
    fake: FakeSegmind, segmind: SegmindProvider
) -> None:
    fake.fail_next_job("Inference failed: content blocked")
    with pytest.raises(SynthesisFailed, match="content blocked") as caught:
        await say(segmind, "Hello.", None, "openvoice")
    assert not caught.value.retryable
    assert len(fake.requests_to("/v2/openvoice")) == 1


async def test_failed_job_served_as_422() -> None:
    async with FakeSegmind(failed_status_http=422) as fake:
        provider = make_provider(fake)
        fake.fail_next_job("Inference failed: out of memory")
        try:
            with pytest.raises(SynthesisFailed, match="out of memory"):
                await say(provider, "Hello.", None, "openvoice")
        finally:
            await provider.aclose()


async def test_expired_job_is_job_expired(fake: FakeSegmind, segmind: SegmindProvider) -> None:
    fake.script("GET", "/v2/requests/{request_id}/status", *[])
    from tests.fakes.base import ScriptedResponse

    fake.script(
        "GET",
        "/v2/requests/{request_id}/status",
        ScriptedResponse(404, {"error": "Request not found or expired"}),
    )
    with pytest.raises(JobExpired, match="unknown or expired") as caught:
        await say(segmind, "Hello.", None, "openvoice")
    assert not caught.value.retryable
    assert len(fake.requests_to("/v2/openvoice")) == 1


async def test_polling_outlives_429_and_5xx_without_resubmitting(
    fake: FakeSegmind, segmind: SegmindProvider
) -> None:
    from tests.fakes.base import ScriptedResponse

    fake.script(
        "GET",
        "/v2/requests/{request_id}/status",
        ScriptedResponse(429, {"error": "Too many requests"}, {"Retry-After": "0.2"}),
        ScriptedResponse(502, {"error": "Bad gateway"}),
        ScriptedResponse(504, {"error": "Timeout"}),
    )
    fake.script("GET", "/v2/requests/{request_id}", ScriptedResponse(503, {"error": "busy"}))
    chunk = await say(segmind, "Hello.", None, "openvoice")
    assert chunk.data
    assert len(fake.requests_to("/v2/openvoice")) == 1
    assert fake.billed_calls == 1


async def test_v2_deadline(fake: FakeSegmind) -> None:
    fake.v2_queued_polls = 10_000
    provider = make_provider(fake, timeout_s={"openvoice": 0.6})
    try:
        with pytest.raises(ProviderUnavailable, match=r"did not finish within 0\.6 s") as caught:
            await say(provider, "Hello.", None, "openvoice")
    finally:
        await provider.aclose()
    assert not caught.value.retryable  # the job exists: never submit it again
    assert len(fake.requests_to("/v2/openvoice")) == 1


async def test_polling_learns_the_run_time() -> None:
    """Cold, polls back off and notice a 1.5 s job late; once the run time is learned, they
    gather around it and notice the finish promptly."""
    text = "A sentence of some length to learn from."
    run_s = 1.5

    def lag_and_polls(job: list[Any]) -> tuple[float, int]:
        polls = [r for r in job if r.path.endswith("/status")]
        return polls[-1].time - job[0].time - run_s, len(polls)

    async with FakeSegmind(v2_processing_seconds=run_s, v2_queued_seconds=0.0) as fake:
        provider = make_provider(fake)
        try:
            await say(provider, text, None, "openvoice")
            cold = lag_and_polls(fake.requests)
            for _ in range(2):
                await say(provider, text, None, "openvoice")
            before = len(fake.requests)
            await say(provider, text, None, "openvoice")
            warm = lag_and_polls(fake.requests[before:])
        finally:
            await provider.aclose()
    assert provider.estimates["openvoice"].predict(len(text)) == pytest.approx(run_s, rel=0.3)
    assert cold[0] > 0.4  # backing off from 0.25 s: 0.25, 0.625, 1.19, 2.03…
    assert warm[0] < 0.3
    assert warm[1] <= 8  # the SDK would poll 3 times (0, 1, 2 s) and notice 0.5 s late


# -- real speech, end to end ---------------------------------------------------------------


async def test_segmind_speech_reaches_discord_opus(transcriber: Transcriber) -> None:
    text = "The garage door has been left open all evening."
    async with FakeSegmind(synthesizer=piper_pcm, audio_format="mp3") as fake:
        settings = config.load(providers={"segmind": {"api_key": KEY, "base_url": fake.base_url}})
        pipeline = SpeechPipeline(settings)
        try:
            utterance = await pipeline.speak(
                SpeechRequest(text=text, provider="segmind", model="chatterbox-turbo-tts")
            )
        finally:
            await pipeline.aclose()
    assert utterance.voice.provider == "segmind"
    assert (utterance.sample_rate, utterance.channels) == (48_000, 2)
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(text, heard) <= 0.2, heard


def test_example_configuration_segmind_section_is_valid() -> None:

    example = EXAMPLE_CONFIG
    provider = SegmindProvider.from_settings(config.load(example))
    assert provider.settings.default_model == "chatterbox-tts"
    assert provider.settings.v2_models == ["chatterbox-turbo-tts", "openvoice"]
