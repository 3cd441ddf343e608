"""Amazon Polly: its standard, neural, long-form and generative voices, through the REST API
(``SynthesizeSpeech``, ``DescribeVoices``), signed with AWS Signature Version 4.

API facts (botocore's service model of Polly, ``polly/2016-06-10/service-2.json``, and AWS's
common errors page):

- ``POST {base}/v1/speech`` takes ``Text`` (at most 3,000 billed characters), ``VoiceId``,
  ``OutputFormat`` (``ogg_opus``: 48 kHz only, ``mp3``, ``pcm``: s16le mono at 8 or 16 kHz,
  and others Oyez does not ask for), ``Engine`` (``standard`` by default, ``neural``, ``long-form``,
  ``generative``: a voice speaks only the engines it lists), ``SampleRate`` (a string) and
  ``TextType``; it answers with the audio and ``x-amzn-RequestCharacters``, the characters
  billed.
- ``GET {base}/v1/voices`` answers ``{"Voices": [{"Id", "Name", "LanguageCode", "Gender",
  "SupportedEngines"}], "NextToken"}``, page by page. Each voice is offered once per engine: the
  engine is this provider's model.
- Errors carry their type in ``x-amzn-ErrorType`` and ``{"message"}``: ``ThrottlingException``
  (HTTP 400) is a rate limit, ``UnrecognizedClientException``, ``InvalidSignatureException``,
  ``AccessDeniedException``… a credentials problem, ``ServiceFailureException`` (500) a
  failure to retry.

Credentials are the configured keys, else botocore's chain (``AWS_ACCESS_KEY_ID``…, a profile of
``~/.aws``, SSO, web identity; the instance or container role only with ``instance_role``),
resolved off the event loop. Requests are signed with botocore's SigV4 signer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from bot.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    RateLimited,
    SynthesisFailed,
    UnknownVoice,
)
from bot.ops.config import LimitSettings, Settings
from bot.providers.base import (
    TYPICAL_CHARACTERS,
    KeptVoices,
    Provider,
    SynthesisJob,
    Synthesized,
    Usage,
    character_cost,
)
from bot.providers.http import ErrorResponse, HttpClient, StatusRule, status_error
from bot.providers.ratelimit import retry_after_s
from bot.speech import AudioChunk, AudioEncoding, Voice

__all__ = [
    "MAX_BILLED_CHARACTERS",
    "POLLY_STATUSES",
    "PollyOptions",
    "PollyProvider",
    "PollySettings",
]

log = logging.getLogger(__name__)

SPEECH_PATH = "/v1/speech"
VOICES_PATH = "/v1/voices"
SERVICE = "polly"
DEFAULT_REGION = "us-east-1"
#: SynthesizeSpeech's limit: "no more than 3000 can be billed characters" (TextLengthExceeded).
MAX_BILLED_CHARACTERS = 3000
#: ... and of those "a maximum of 6000 characters total", SSML tags included.
MAX_CHARACTERS = 6000
#: The engines whose SSML takes ``<prosody rate>`` (Polly's "Supported SSML tags" table).
_PROSODY_ENGINES = frozenset({"standard", "neural"})
#: List prices in USD per million characters by engine, from Amazon's Polly pricing page
#: (2026); the free tier is not counted. ``prices`` overrides them.
PRICES: dict[str, float] = {
    "standard": 4.0,
    "neural": 16.0,
    "long-form": 100.0,
    "generative": 30.0,
}
Engine = Literal["standard", "neural", "long-form", "generative"]
OutputFormat = Literal["ogg_opus", "mp3", "pcm"]
#: The engines a voice is taken in when a request names none, after ``default_engine``.
_ENGINE_ORDER: tuple[str, ...] = ("neural", "generative", "standard", "long-form")
_ENCODINGS: dict[str, AudioEncoding] = {
    "ogg_opus": AudioEncoding.OGG_OPUS,
    "mp3": AudioEncoding.MP3,
    "pcm": AudioEncoding.PCM_S16LE,
}
#: Error types (x-amzn-ErrorType) that mean: slow down. AWS's common errors, and the
#: throttling codes botocore's retry handler knows.
_THROTTLING = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
#: Error types that mean: these credentials may not do this.
_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "AccessDeniedException",
    }
)


class PollySettings(BaseModel):
    """``providers.polly`` in the configuration."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(
        None, description="AWS region; none: AWS_REGION, the profile's, else us-east-1"
    )
    access_key_id: str | None = Field(
        None, description="With secret_access_key; none: botocore's chain (AWS_ACCESS_KEY_ID…)"
    )
    secret_access_key: SecretStr | None = Field(
        None, description="With access_key_id; keep it in OYEZ_PROVIDERS__POLLY__SECRET_ACCESS_KEY"
    )
    session_token: SecretStr | None = Field(None, description="For temporary credentials")
    profile: str | None = Field(None, description="A profile of ~/.aws/config to take")
    instance_role: bool = Field(
        False, description="Also ask the EC2 instance or ECS container role for credentials"
    )
    base_url: AnyHttpUrl | None = Field(
        None, description="Default: https://polly.<region>.amazonaws.com"
    )
    default_voice: str = Field("Joanna", description="Voice used when a request names none")
    default_engine: Engine = Field(
        "standard", description="Engine of a voice when a request names none"
    )
    output_format: OutputFormat = Field(
        "ogg_opus", description="What Polly sends: ogg_opus (48 kHz), mp3 or pcm (16 kHz)"
    )
    sample_rate: int | None = Field(
        None, description="Asked of Polly, Hz; none: the format's default"
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per million characters by engine, over Amazon's list prices",
    )
    voices_ttl_s: float = Field(
        3600, ge=0, description="How long the voice list is kept (seconds; 0: never)"
    )
    timeout_s: float = Field(60, gt=0, le=600, description="Limit for one call")


class PollyOptions(BaseModel):
    """Per-request options: ``output_format`` and ``sample_rate`` (as the settings'),
    ``language_code`` (a bilingual voice's other language, such as Aditi's ``hi-IN``),
    ``speaking_rate`` (0.2 to 2, 1 normal: SSML's ``<prosody rate>``, in percent; Polly's SSML
    page gives 20% as the least), ``lexicons`` (the names of pronunciation lexicons stored in
    the account's region, at most 5: ``LexiconNames``)."""

    model_config = ConfigDict(extra="forbid")

    lexicons: list[str] | None = Field(None, max_length=5)

    speaking_rate: float | None = Field(None, ge=0.2, le=2.0)
    output_format: OutputFormat | None = None
    sample_rate: int | None = None
    language_code: str | None = None


def _error_type(response: ErrorResponse) -> str:
    """The error's type: ``x-amzn-ErrorType`` up to its ``:``, else the body's ``__type``."""
    header = response.headers.get("x-amzn-ErrorType", "")
    if header:
        return header.split(":", 1)[0]
    try:
        kind = json.loads(response.body).get("__type", "")
    except (ValueError, AttributeError):
        return ""
    return str(kind).rsplit("#", 1)[-1]


def _message(response: ErrorResponse) -> str:
    """``<type>: <message>``: AWS's messages ("Rate exceeded") need their type to be read."""
    kind = _error_type(response)
    return f"{kind}: {response.message}" if kind else response.message


def _polly_error(response: ErrorResponse) -> ProviderError:
    """Polly's errors by their type first: a 400 may be throttling or a credentials problem."""
    kind, message = _error_type(response), _message(response)
    provider, model, status = response.provider, response.model, response.status
    if kind in _THROTTLING or status == 429:
        hint = retry_after_s(response.headers)
        return RateLimited(provider, message, retry_after_s=hint, model=model, status=status)
    if kind in _CREDENTIALS:
        return ProviderAuthError(provider, message, model=model, status=status)
    if status == 400:
        return ProviderRequestError(provider, message, model=model, status=status)
    plain = ErrorResponse(
        response.provider,
        response.status,
        response.headers,
        json.dumps({"message": message}).encode(),
        response.model,
    )
    return status_error(plain)


#: Every error status is read with its type (x-amzn-ErrorType).
POLLY_STATUSES: Mapping[int, StatusRule] = {
    status: _polly_error for status in (400, 403, 404, 409, 429, 500, 503)
}


def _chain_has_credentials(profile: str | None) -> bool:
    """Whether botocore's chain can find credentials without asking the network: keys in the
    environment, a profile, a shared file, SSO or a web identity token."""
    env = os.environ
    if profile or env.get("AWS_PROFILE"):
        return True
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    files = (
        env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        env.get("AWS_CONFIG_FILE", "~/.aws/config"),
    )
    return any(Path(name).expanduser().is_file() for name in files)


class PollyProvider(Provider):
    """Speech from Amazon Polly. Raises :class:`bot.errors.ProviderError` subclasses; the
    secret key signs requests and is never sent, logged or shown."""

    kind = "polly"
    settings_model = PollySettings
    paid = True
    # Polly's quotas are per operation and region; its ThrottlingException is waited out.
    default_limits = LimitSettings(max_concurrent=8)

    def __init__(
        self, settings: PollySettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: PollySettings = settings
        self.region = settings.region or _configured_region(settings.profile) or DEFAULT_REGION
        base = (
            str(settings.base_url)
            if settings.base_url
            else f"https://polly.{self.region}.amazonaws.com"
        )
        self.http = HttpClient(
            self.name, base, {}, timeout_s=settings.timeout_s, statuses=POLLY_STATUSES
        )
        self._static: Credentials | None = None
        if settings.access_key_id and settings.secret_access_key:
            token = settings.session_token.get_secret_value() if settings.session_token else None
            self._static = Credentials(
                settings.access_key_id, settings.secret_access_key.get_secret_value(), token
            )
        self._chain: Credentials | None = None
        self._voices = KeptVoices(settings.voices_ttl_s)

    def configuration_problem(self) -> str | None:
        settings = self.settings
        if bool(settings.access_key_id) != bool(settings.secret_access_key):
            return (
                f"providers.{self.name}: access_key_id and secret_access_key go together; "
                "set both, or neither to use AWS's usual credentials"
            )
        if self._static or settings.instance_role or _chain_has_credentials(settings.profile):
            return None
        return (
            f"no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile "
            f"(AWS_PROFILE or providers.{self.name}.profile), providers.{self.name}."
            f"access_key_id and secret_access_key, or providers.{self.name}.instance_role"
        )

    async def _credentials(self) -> ReadOnlyCredentials:
        """The credentials to sign with, current (a refreshable one is refreshed off the loop).
        Raises :class:`ProviderAuthError` when there are none."""
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem)
        chosen = self._static or self._chain
        if chosen is None:
            chosen = self._chain = await asyncio.to_thread(self._resolve)
        return await asyncio.to_thread(chosen.get_frozen_credentials)

    def _resolve(self) -> Credentials:
        import botocore.session
        from botocore.credentials import create_credential_resolver

        session = botocore.session.Session(profile=self.settings.profile)
        resolver = create_credential_resolver(session)
        if not self.settings.instance_role:
            for name in ("container-role", "iam-role"):
                resolver.remove(name)
        found = resolver.load_credentials()
        if found is None:
            raise ProviderAuthError(self.name, "botocore's credential chain found no credentials")
        return found

    async def _signed(self, method: str, path: str, body: bytes | None) -> dict[str, str]:
        """The headers that sign ``method path`` with ``body`` (SigV4, service ``polly``)."""
        credentials = await self._credentials()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = AWSRequest(
            method=method, url=self.http.base_url + path, data=body or b"", headers=headers
        )
        SigV4Auth(credentials, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    # -- voices ------------------------------------------------------------------------------
    async def list_voices(self) -> list[Voice]:
        """Every voice of ``DescribeVoices`` (all pages), once per engine it speaks, kept
        ``voices_ttl_s``."""
        return await self._voices.get(self._fetch_voices)

    async def _fetch_voices(self) -> list[Voice]:
        voices: list[Voice] = []
        token: str | None = None
        for _ in range(100):  # pages; Polly has ~100 voices, a few pages
            query = {"NextToken": token} if token else {}
            path = VOICES_PATH + ("?" + urlencode(query, quote_via=quote) if query else "")
            headers = await self._signed("GET", path, None)
            async with self.http.request("GET", path, headers=headers) as response:
                raw = await response.read()
            try:
                page = json.loads(raw)
                for entry in page["Voices"]:
                    voices += [
                        Voice(
                            self.name,
                            str(engine),
                            str(entry["Id"]),
                            str(entry.get("Name") or entry["Id"]),
                            str(entry["LanguageCode"]).replace("-", "_"),
                        )
                        for engine in entry.get("SupportedEngines") or ["standard"]
                    ]
                token = page.get("NextToken")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ProviderError(self.name, "the voice list cannot be read") from None
            if not token:
                break
        log.debug("%s: %d voices", self.name, len(voices))
        return voices

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """A voice by id or name, any case, in engine ``model``; with none named,
        ``default_engine`` when the voice speaks it, else its best (neural, generative,
        standard, long-form). Raises :class:`UnknownVoice` / :class:`UnknownModel`."""
        if model is not None:
            return await super().resolve_voice(voice, model)
        wanted = (voice or self.default_voice_id()).casefold()
        voices = await self.list_voices()
        found = [v for v in voices if wanted in (v.id.casefold(), v.name.casefold())]
        if not found:
            ids = sorted({v.id for v in voices})
            raise UnknownVoice(voice or self.default_voice_id(), ids, self.name)
        order = (self.settings.default_engine, *_ENGINE_ORDER)
        return min(found, key=lambda v: order.index(v.model) if v.model in order else 99)

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - Provider.options_model: one model for all
        return PollyOptions

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any] | None:
        """``speaking_rate`` for the engines whose SSML takes ``<prosody rate>`` (standard and
        neural, per Polly's table of supported SSML tags); None for the others."""
        return {"speaking_rate": speed} if voice.model in _PROSODY_ENGINES else None

    def price(self, voice: Voice) -> float | None:
        """USD per million characters of ``voice``'s engine, or None when unknown."""
        return self.settings.prices.get(voice.model, PRICES.get(voice.model))

    def estimated_cost(self, voice: Voice) -> float | None:
        return character_cost(self.price(voice), TYPICAL_CHARACTERS)

    # -- synthesis ---------------------------------------------------------------------------
    def _payload(self, job: SynthesisJob) -> dict[str, Any]:
        """The documented fields only. Raises :class:`InvalidRequest` for over-long input."""
        if len(job.text) > MAX_BILLED_CHARACTERS:
            raise InvalidRequest(
                f"text is too long for {self.name}: {len(job.text)} characters, Polly takes "
                f"at most {MAX_BILLED_CHARACTERS} per call"
            )
        options = PollyOptions.model_validate(dict(job.options))
        text, kind = job.text, "text"
        if options.speaking_rate is not None and options.speaking_rate != 1:
            percent = round(options.speaking_rate * 100)
            text = f'<speak><prosody rate="{percent}%">{escape(job.text)}</prosody></speak>'
            kind = "ssml"  # its tags are not billed
            if len(text) > MAX_CHARACTERS:
                raise InvalidRequest(
                    f"text is too long for {self.name} at this speed: {len(text)} characters "
                    f"with its SSML, Polly takes at most {MAX_CHARACTERS} per call"
                )
        payload: dict[str, Any] = {
            "Engine": job.voice.model,
            "OutputFormat": options.output_format or self.settings.output_format,
            "Text": text,
            "TextType": kind,
            "VoiceId": job.voice.id,
        }
        rate = options.sample_rate or self.settings.sample_rate
        if rate is not None:
            payload["SampleRate"] = str(rate)  # a string in Polly's API
        if options.language_code:
            payload["LanguageCode"] = options.language_code
        if options.lexicons:
            payload["LexiconNames"] = options.lexicons
        return payload

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        """The whole utterance as ``output_format``, and what it cost: the characters Polly
        billed (``x-amzn-RequestCharacters``) at the engine's price."""
        payload = self._payload(job)
        body = json.dumps(payload).encode()
        headers = await self._signed("POST", SPEECH_PATH, body)
        async with self.http.request(
            "POST", SPEECH_PATH, model=job.voice.model, data=body, headers=headers
        ) as response:
            audio = await response.read()
            billed = response.headers.get("x-amzn-RequestCharacters")
        if not audio:
            raise SynthesisFailed(self.name, "the response holds no audio", model=job.voice.model)
        characters = int(billed) if billed and billed.isdigit() else len(job.text)
        cost = character_cost(self.price(job.voice), characters)
        chosen = str(payload["OutputFormat"])
        encoding = _ENCODINGS[chosen]
        rate = int(payload.get("SampleRate", 16000)) if encoding.is_raw_pcm else 0
        chunk = AudioChunk(audio, encoding, rate, 1 if encoding.is_raw_pcm else 0)
        return Synthesized(chunk, Usage(cost_usd=cost))

    async def aclose(self) -> None:
        await self.http.aclose()


def _configured_region(profile: str | None) -> str | None:
    """The region botocore would take: ``AWS_REGION``/``AWS_DEFAULT_REGION``, else the
    profile's in ``~/.aws/config`` (botocore's session, ~0.1 s to import, is loaded only when
    that file exists: a process that never uses Polly does not pay for it)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    if not Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser().is_file():
        return None
    import botocore.session

    found = botocore.session.Session(profile=profile).get_config_variable("region")
    return str(found) if found else None
