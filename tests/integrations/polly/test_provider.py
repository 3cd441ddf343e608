"""Amazon Polly against the simulated API (tests/fakes/polly.py), which checks every request's
SigV4 signature: the documented request, voices per engine, AWS's error types, billing by the
characters Polly reports, credentials from the configuration or AWS's chain, and real speech."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.errors import (
    InvalidOptions,
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
    UnknownVoice,
)
from bot.ops import config
from bot.providers.base import ProviderRegistry, SynthesisJob
from bot.speech import AudioEncoding, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.polly import PollyProvider
from integrations.polly.provider import MAX_BILLED_CHARACTERS
from tests.fakes.polly import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_ACCESS_KEY,
    SIGNATURE_MISMATCH_MESSAGE,
    FakePolly,
)
from tests.support.asr import Transcriber, word_error_rate
from tests.support.speech import piper_pcm

SPEECH = "/v1/speech"
VOICES = "/v1/voices"
SECRET = DEFAULT_SECRET_ACCESS_KEY


def polly_settings(fake: FakePolly, tmp_path: Path, **section: Any) -> config.Settings:
    section = {
        "access_key_id": DEFAULT_ACCESS_KEY_ID,
        "secret_access_key": SECRET,
        "region": DEFAULT_REGION,
        "base_url": fake.base_url,
        **section,
    }
    return config.load(data_dir=tmp_path / "data", providers={"polly": section})


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials, profile or region of this machine's leak into a test."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def fake() -> AsyncIterator[FakePolly]:
    async with FakePolly() as server:
        yield server


@pytest.fixture
async def polly(fake: FakePolly, tmp_path: Path) -> AsyncIterator[PollyProvider]:
    registry = ProviderRegistry.default(polly_settings(fake, tmp_path))
    provider = registry.get("polly")
    assert isinstance(provider, PollyProvider)
    yield provider
    await registry.aclose()


async def make_job(
    provider: PollyProvider,
    voice: str | None = None,
    model: str | None = None,
    text: str = "Hello.",
    **options: Any,
) -> SynthesisJob:
    chosen = await provider.resolve_voice(voice, model)
    return SynthesisJob("r1", text, chosen, provider.validate_options(chosen, options))


def sent(fake: FakePolly) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in fake.requests_to(SPEECH)]


async def test_a_signed_request_of_the_documented_shape_and_its_billed_cost(
    polly: PollyProvider, fake: FakePolly
) -> None:
    text = "The bins go out tonight."
    result = await polly.synthesize(await make_job(polly, text=text))
    (body,) = sent(fake)
    assert body == {
        "Engine": "standard",
        "OutputFormat": "ogg_opus",
        "Text": text,
        "TextType": "text",
        "VoiceId": "Joanna",
    }
    (logged,) = fake.requests_to(SPEECH)
    authorization = logged.headers["authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={DEFAULT_ACCESS_KEY_ID}/"
    )  # the fake checked the signature itself, or it would have answered 403
    assert f"/{DEFAULT_REGION}/polly/aws4_request" in authorization
    assert SECRET not in str(logged.headers)
    assert result.chunk.encoding is AudioEncoding.OGG_OPUS
    assert result.chunk.data.startswith(b"OggS")
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(len(text) * 4.0 / 1e6)  # standard: $4 / M
    assert fake.characters_billed == len(text)


async def test_engines_formats_and_options(polly: PollyProvider, fake: FakePolly) -> None:
    job = await make_job(polly, "Matthew", "neural", output_format="pcm", sample_rate=8000)
    result = await polly.synthesize(job)
    assert sent(fake)[-1] == {
        "Engine": "neural",
        "OutputFormat": "pcm",
        "SampleRate": "8000",  # a string in Polly's API
        "Text": "Hello.",
        "TextType": "text",
        "VoiceId": "Matthew",
    }
    chunk = result.chunk
    assert (chunk.encoding, chunk.sample_rate, chunk.channels) == (AudioEncoding.PCM_S16LE, 8000, 1)
    assert len(chunk.data) > 0 and len(chunk.data) % 2 == 0
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(6 * 16.0 / 1e6)  # neural: $16 / M
    mp3 = await polly.synthesize(await make_job(polly, "Amy", output_format="mp3"))
    assert mp3.chunk.encoding is AudioEncoding.MP3
    bilingual = await make_job(polly, "Aditi", language_code="hi-IN")
    await polly.synthesize(bilingual)
    assert sent(fake)[-1]["LanguageCode"] == "hi-IN"


async def test_lexicons_are_named_in_the_request(polly: PollyProvider, fake: FakePolly) -> None:
    fake.lexicons.add("homenames")
    await polly.synthesize(await make_job(polly, lexicons=["homenames"]))
    assert sent(fake)[-1]["LexiconNames"] == ["homenames"]
    with pytest.raises(ProviderError, match="LexiconNotFoundException"):  # Polly's 404
        await polly.synthesize(await make_job(polly, lexicons=["missing"]))
    with pytest.raises(InvalidOptions, match="lexicons"):
        await make_job(polly, lexicons=[f"l{n}" for n in range(6)])  # at most 5


async def test_voices_come_once_per_engine_from_every_page(
    polly: PollyProvider, fake: FakePolly
) -> None:
    voices = await polly.list_voices()
    assert len(fake.requests_to(VOICES)) == 3  # 9 voices, 4 a page: NextToken followed
    engines = {(v.id, v.model) for v in voices}
    assert {("Joanna", "standard"), ("Joanna", "neural"), ("Kevin", "neural")} <= engines
    assert ("Kevin", "standard") not in engines
    lea = next(v for v in voices if v.id == "Lea")
    assert (lea.name, lea.language) == ("Léa", "fr_FR")
    await polly.list_voices()
    assert len(fake.requests_to(VOICES)) == 3  # kept voices_ttl_s


async def test_a_voice_is_taken_in_the_default_engine_else_its_best(polly: PollyProvider) -> None:
    assert (await polly.resolve_voice(None, None)).label == "polly/standard/Joanna"
    assert (await polly.resolve_voice("kevin", None)).model == "neural"  # neural only
    assert (await polly.resolve_voice("Léa", None)).id == "Lea"  # by name, any case
    assert (await polly.resolve_voice("Danielle", None)).model == "neural"
    assert (await polly.resolve_voice("Joanna", "generative")).model == "generative"
    with pytest.raises(UnknownModel):
        await polly.resolve_voice("Joanna", "turbo")
    with pytest.raises(UnknownVoice) as caught:
        await polly.resolve_voice("Joana", None)
    assert "did you mean 'Joanna'" in str(caught.value)


async def test_invalid_options_and_long_texts_never_reach_the_api(
    polly: PollyProvider, fake: FakePolly
) -> None:
    voice = await polly.resolve_voice(None, None)
    for options, named in (
        ({"output_format": "wav"}, "output_format"),
        ({"speed": 1.2}, "speed"),
    ):
        with pytest.raises(InvalidOptions) as caught:
            polly.validate_options(voice, options)
        assert named in str(caught.value)
    with pytest.raises(InvalidRequest, match=f"at most {MAX_BILLED_CHARACTERS}"):
        await polly.synthesize(await make_job(polly, text="a" * (MAX_BILLED_CHARACTERS + 1)))
    assert fake.requests_to(SPEECH) == []


async def test_speed_is_ssml_prosody_and_its_tags_are_not_billed(
    polly: PollyProvider, fake: FakePolly
) -> None:
    voice = await polly.resolve_voice("Joanna", "neural")
    options = polly.validate_options(voice, polly.rate_options(voice, 1.5) or {})
    text = "Fish & chips <at> eight."
    result = await polly.synthesize(SynthesisJob("r", text, voice, options))
    body = sent(fake)[-1]
    assert body["TextType"] == "ssml"
    assert body["Text"] == (
        '<speak><prosody rate="150%">Fish &amp; chips &lt;at&gt; eight.</prosody></speak>'
    )
    assert fake.characters_billed == len(text)  # Polly bills the words, not the tags
    assert result.usage is not None
    assert result.usage.cost_usd == pytest.approx(len(text) * 16.0 / 1e6)
    generative = await polly.resolve_voice("Joanna", "generative")
    assert polly.rate_options(generative, 1.5) is None  # no <prosody rate>: its own speed
    with pytest.raises(InvalidOptions, match="speaking_rate"):
        polly.validate_options(voice, {"speaking_rate": 0.1})
    await polly.synthesize(SynthesisJob("r", "Plain.", voice, {"speaking_rate": 1.0}))
    assert sent(fake)[-1]["TextType"] == "text"  # normal speed: no SSML


@pytest.mark.parametrize(
    ("inject", "error", "retryable", "words"),
    [
        ("inject_throttling", RateLimited, True, "ThrottlingException: Rate exceeded"),
        ("inject_access_denied", ProviderAuthError, False, "AccessDeniedException: User:"),
        ("inject_service_failure", ProviderUnavailable, True, "ServiceFailureException: "),
    ],
)
async def test_aws_error_types_map_to_typed_errors(
    polly: PollyProvider,
    fake: FakePolly,
    inject: str,
    error: type[ProviderError],
    retryable: bool,
    words: str,
) -> None:
    job = await make_job(polly)
    getattr(fake, inject)()
    with pytest.raises(error) as caught:
        await polly.synthesize(job)
    assert type(caught.value) is error
    assert str(caught.value).startswith(f"polly/standard: {words}")
    assert caught.value.retryable is retryable
    assert SECRET not in str(caught.value)
    assert fake.characters_billed == 0


async def test_polly_refusing_a_request_is_a_request_error(polly: PollyProvider) -> None:
    voice = await polly.resolve_voice("Kevin", None)
    wrong = SynthesisJob("r", "Hi.", replace(voice, model="standard"))
    with pytest.raises(ProviderRequestError) as caught:
        await polly.synthesize(wrong)  # Kevin does not speak standard: Polly says so
    assert str(caught.value).startswith("polly/standard: EngineNotSupportedException: ")
    assert "(HTTP 400)" in str(caught.value)


async def test_a_wrong_secret_is_refused_and_never_shown(
    fake: FakePolly, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-secret-never-print-me-0123456789"
    provider = PollyProvider.from_settings(polly_settings(fake, tmp_path, secret_access_key=wrong))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await provider.list_voices()
    finally:
        await provider.aclose()
    assert caught.value.status == 403
    assert str(caught.value).startswith(
        f"polly: InvalidSignatureException: {SIGNATURE_MISMATCH_MESSAGE}"
    )
    for text in (str(caught.value), caplog.text, repr(provider.settings), str(provider.settings)):
        assert wrong not in text
    other = PollyProvider.from_settings(polly_settings(fake, tmp_path, access_key_id="AKIDOTHER"))
    try:
        with pytest.raises(ProviderAuthError, match="UnrecognizedClientException"):
            await other.list_voices()
    finally:
        await other.aclose()


async def test_credentials_come_from_awss_chain_when_none_are_configured(
    fake: FakePolly, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = {"base_url": fake.base_url}
    settings = config.load(data_dir=tmp_path / "data", providers={"polly": section})
    provider = PollyProvider.from_settings(settings)
    try:
        problem = provider.configuration_problem()
        assert problem is not None and problem.startswith(
            "no AWS credentials: set AWS_ACCESS_KEY_ID"
        )
        with pytest.raises(ProviderAuthError, match="no AWS credentials"):
            await provider.list_voices()
        assert fake.requests == []
    finally:
        await provider.aclose()
    # a profile of the shared credentials file, and its region from the config file
    (tmp_path / "credentials").write_text(
        f"[speaker]\naws_access_key_id = {DEFAULT_ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET}\n"
    )
    (tmp_path / "config").write_text(f"[profile speaker]\nregion = {DEFAULT_REGION}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "speaker")
    provider = PollyProvider.from_settings(settings)
    try:
        assert provider.configuration_problem() is None
        assert provider.region == DEFAULT_REGION  # the profile's: the fake refuses others
        assert len(await provider.list_voices()) > 9
    finally:
        await provider.aclose()


def test_half_a_key_pair_is_a_configuration_problem(tmp_path: Path) -> None:
    section = {"access_key_id": DEFAULT_ACCESS_KEY_ID}
    settings = config.load(data_dir=tmp_path / "data", providers={"polly": section})
    problem = PollyProvider.from_settings(settings).configuration_problem()
    assert problem is not None
    assert "access_key_id and secret_access_key go together" in problem


async def test_temporary_credentials_sign_with_their_token(tmp_path: Path) -> None:
    async with FakePolly(session_token="token/with+odd=chars") as server:
        provider = PollyProvider.from_settings(
            polly_settings(server, tmp_path, session_token="token/with+odd=chars")
        )
        try:
            result = await provider.synthesize(await make_job(provider))
        finally:
            await provider.aclose()
        assert result.chunk.data.startswith(b"OggS")
        assert server.requests_to(SPEECH)[0].headers["x-amz-security-token"] == "<redacted>"


async def test_throttling_is_waited_out_and_billed_once(fake: FakePolly, tmp_path: Path) -> None:
    settings = polly_settings(fake, tmp_path, default_voice="Matthew")
    settings = settings.model_copy(
        update={"rate_limits": settings.rate_limits.model_copy(update={"backoff_base_s": 0.05})}
    )
    pipeline = SpeechPipeline(settings)
    try:
        fake.inject_throttling()
        spoken = await pipeline.speak(SpeechRequest(text="The post has come.", provider="polly"))
    finally:
        await pipeline.aclose()
    assert spoken.voice.label == "polly/standard/Matthew"
    assert len(fake.requests_to(SPEECH)) == 2  # the throttled call, then the one that spoke
    assert fake.characters_billed == len("The post has come.")
    assert spoken.cost_usd == pytest.approx(len("The post has come.") * 4.0 / 1e6)


async def test_real_speech_through_the_fake_and_the_pipeline(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    sentence = "The washing machine has finished and the laundry is ready to hang."
    async with FakePolly(synthesizer=piper_pcm) as fake:
        speech = SpeechPipeline(polly_settings(fake, tmp_path))
        try:
            utterance = await speech.speak(
                SpeechRequest(text=sentence, provider="polly", voice="Brian", model="neural")
            )
        finally:
            await speech.aclose()
        (body,) = sent(fake)
    assert body["Text"] == sentence
    assert utterance.voice.label == "polly/neural/Brian"
    assert (utterance.sample_rate, utterance.channels) == (48_000, 2)
    heard = transcriber.transcribe(utterance.audio)
    assert word_error_rate(sentence, heard) <= 0.2, heard
