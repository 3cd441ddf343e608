"""Segmind: Orpheus 3B, Chatterbox, Chatterbox Turbo and OpenVoice, sync (v1) and queued (v2).

API facts (Segmind's API pages and SDK): auth is the ``x-api-key`` header (not Bearer); ``POST
/v1/{model}`` answers with the audio and the headers ``x-cost`` and ``x-remaining-credits``;
``POST /v2/{model}`` queues a job polled at ``/v2/requests/{id}/status`` (QUEUED → PROCESSING →
COMPLETED | FAILED, served as 422) whose result (``output`` URL, ``metrics``) is at
``/v2/requests/{id}`` for one hour (then 404). 406 means insufficient credits. A v2 job is
billed on submission, so every failure after it is raised as not retryable: never resubmitted.

With :attr:`~bot.providers.base.Provider.jobs` set (several processes, ``engine.url``) a v2 job's
``request_id`` is recorded, under a key of its model and payload, right after the submit and
before the first poll; another process that then synthesizes the same payload (taking over a
synthesis whose process died) finds it and polls that job instead of paying for a new one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from bot.errors import (
    InsufficientCredits,
    JobExpired,
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
from bot.ops.config import LimitSettings, Settings
from bot.providers.base import (
    Provider,
    RequestGate,
    SynthesisJob,
    Synthesized,
    Usage,
    api_key,
)
from bot.providers.http import (
    ErrorResponse,
    HttpClient,
    NotSent,
    StatusRule,
    encoding_from_response,
)
from bot.providers.jobs import job_key
from bot.speech import AudioChunk, Voice
from integrations.segmind.models import MODELS, SegmindModel
from integrations.segmind.poll import CompletionEstimate, PollPlan

__all__ = ["SEGMIND_STATUSES", "SegmindProvider", "SegmindSettings"]

log = logging.getLogger(__name__)

API_KEY_ENV = "SEGMIND_API_KEY"


class PollSettings(BaseModel):
    """How a queued (v2) job is polled before Oyez has learned the model's run time
    (fast at first, then backing off), and the longest wait between two polls."""

    model_config = ConfigDict(extra="forbid")

    first_s: float = Field(0.25, gt=0, le=10, description="Wait before the first status poll")
    factor: float = Field(1.5, ge=1.0, le=4.0, description="Growth of the wait between polls")
    max_s: float = Field(1.0, gt=0, le=60, description="Longest wait between two polls")


class SegmindSettings(BaseModel):
    """``providers.segmind`` in the configuration."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(None, description=f"Else ${API_KEY_ENV}")
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.segmind.com")
    default_model: str = "chatterbox-tts"
    default_voice: str = "default"
    v2_models: list[str] = Field(
        default_factory=lambda: ["chatterbox-turbo-tts", "openvoice"],
        description="Models called through the queued v2 API",
    )
    timeout_s: dict[str, float] = Field(
        default_factory=dict, description="Per-model limit for one sync call or one v2 job"
    )
    poll: PollSettings = Field(default_factory=PollSettings)


def _not_acceptable(response: ErrorResponse) -> ProviderError:
    """406 means insufficient credits, but also answers a missing Content-Type."""
    error = (
        ProviderRequestError if "content type" in response.message.lower() else InsufficientCredits
    )
    return error(response.provider, response.message, model=response.model, status=response.status)


#: Segmind's own statuses on top of the shared table: 406 is out of credits, 422 a failed job.
SEGMIND_STATUSES: Mapping[int, StatusRule] = {406: _not_acceptable, 422: SynthesisFailed}


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


class SegmindProvider(Provider):
    kind = "segmind"
    settings_model = SegmindSettings
    paid = True
    # Segmind's plans: Free 5 requests/min, Pro 50 (Segmind API notes). Free is the safe default.
    default_limits = LimitSettings(requests_per_minute=5, max_concurrent=2)

    def __init__(
        self, settings: SegmindSettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: SegmindSettings = settings
        self._api_key = api_key(settings.api_key, API_KEY_ENV)
        self.http = HttpClient(
            self.name,
            str(settings.base_url),
            {"x-api-key": self._api_key or ""},
            timeout_s=120,
            statuses=SEGMIND_STATUSES,
        )
        #: Last figures Segmind reported: remaining credits and the cost of the last call (USD).
        self.remaining_credits: float | None = None
        self.last_cost: float | None = None
        #: Learned run time of v2 jobs, per model (see integrations.segmind.poll).
        self.estimates: dict[str, CompletionEstimate] = {}

    def configuration_problem(self) -> str | None:
        if not self._api_key:
            return f"no API key: set {API_KEY_ENV} or providers.{self.name}.api_key"
        return None

    def _model(self, slug: str) -> SegmindModel:
        model = MODELS.get(slug)
        if model is None:
            raise UnknownModel(slug, self.name, MODELS)
        return model

    async def list_voices(self) -> list[Voice]:
        default = self._model(self.settings.default_model)
        ordered = [default, *(m for m in MODELS.values() if m is not default)]
        return [
            Voice(self.name, m.slug, voice_id, f"{m.title}: {voice_id}", "en")
            for m in ordered
            for voice_id in m.voices
        ]

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """Also accepts an http(s) URL as the voice of a cloning model: the reference recording."""
        if voice and voice.startswith(("http://", "https://")):
            chosen = self._model(model or self.settings.default_model)
            if not chosen.clones:
                raise UnknownVoice(voice, chosen.voices, self.name)
            return Voice(self.name, chosen.slug, voice, "cloned from a reference recording", "en")
        if voice is None and model is not None:
            chosen = self._model(model)
            if self.settings.default_voice not in chosen.voices:
                voice = chosen.default_voice  # the provider default belongs to another model
        return await super().resolve_voice(voice, model)

    def options_model(self, voice: Voice) -> type[BaseModel]:
        return self._model(voice.model).options

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any] | None:
        """``speed`` for the models that take it (OpenVoice: 0.5 to 2, 1 normal, from its API
        page); None for the others."""
        if "speed" in self._model(voice.model).options.model_fields:
            return {"speed": speed}
        return None

    def estimated_cost(self, voice: Voice) -> float | None:
        return self._model(voice.model).cost_usd

    async def check_credits(self) -> float | None:
        """``GET /v1/get-user-credits`` (free): paid plus free credits, in USD."""
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem)
        async with self.http.request("GET", "/v1/get-user-credits") as response:
            body = await response.read()
        try:
            data = json.loads(body)
            credits = float(data.get("credits") or 0) + float(data.get("free-credits") or 0)
        except (ValueError, TypeError, AttributeError):
            raise SynthesisFailed(self.name, "unreadable credit balance") from None
        self.remaining_credits = credits
        return credits

    def _payload(self, job: SynthesisJob) -> dict[str, Any]:
        model = self._model(job.voice.model)
        options = self.options_model(job.voice).model_validate(dict(job.options))
        payload: dict[str, Any] = {"text": job.text}
        payload[model.voice_field] = model.voices.get(job.voice.id, job.voice.id)
        payload.update(options.model_dump(mode="json", exclude_none=True))
        return payload

    def _timeout(self, model: SegmindModel) -> float:
        configured = self.settings.timeout_s.get(model.slug)
        if configured:
            return configured
        return max(120.0, 3 * (model.typical_s or 0))

    def _usage(self, cost: float | None, remaining: float | None) -> Usage:
        """The usage Segmind reported (USD), remembered as the last figures."""
        if cost is not None:
            self.last_cost = cost
        if remaining is not None:
            self.remaining_credits = remaining
        return Usage(cost_usd=cost, remaining_credits=remaining)

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem, model=job.voice.model)
        model = self._model(job.voice.model)
        payload = self._payload(job)
        if model.slug in self.settings.v2_models:
            return await self._run_v2(model, payload, job.gate)
        return await self._run_v1(model, payload)

    async def _run_v1(self, model: SegmindModel, payload: dict[str, Any]) -> Synthesized:
        async with self.http.request(
            "POST",
            f"/v1/{model.slug}",
            model=model.slug,
            json_body=payload,
            timeout_s=self._timeout(model),
        ) as response:
            body = await response.read()
            usage = self._usage(
                _float_header(response.headers, "x-cost"),
                _float_header(response.headers, "x-remaining-credits"),
            )
            content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json":
            return Synthesized(await self._audio_from_json(model, body), usage)
        return Synthesized(self._audio(model, body, content_type), usage)

    def _audio(self, model: SegmindModel, data: bytes, content_type: str) -> AudioChunk:
        encoding = encoding_from_response(content_type, data)
        if encoding is None or not data:
            raise SynthesisFailed(
                self.name,
                f"the response is not audio ({content_type or 'no Content-Type'}, "
                f"{len(data)} bytes)",
                model=model.slug,
            )
        return AudioChunk(data, encoding, 0, 0)

    async def _audio_from_json(self, model: SegmindModel, body: bytes) -> AudioChunk:
        """A JSON answer carries a media URL or base64 audio (Segmind does not document which)."""
        try:
            data = json.loads(body)
        except ValueError:
            raise SynthesisFailed(
                self.name, "the JSON response cannot be parsed", model=model.slug
            ) from None
        if isinstance(data, dict):
            for key in ("output", "audio", "audio_url", "url", "audio_base64", "data"):
                if isinstance(data.get(key), str) and data[key]:
                    return await self._audio_from_value(model, data[key])
        raise SynthesisFailed(
            self.name, "the JSON response holds no audio URL or data", model=model.slug
        )

    async def _audio_from_value(self, model: SegmindModel, value: str) -> AudioChunk:
        """``value`` is a media URL (downloaded without the API key) or base64 audio."""
        if value.startswith(("http://", "https://")):
            return self._audio(model, await self.http.download(value, model=model.slug), "")
        try:
            audio = base64.b64decode(value.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            raise SynthesisFailed(
                self.name, "the audio is neither a URL nor base64", model=model.slug
            ) from None
        return self._audio(model, audio, "")

    async def _submit(self, model: SegmindModel, payload: dict[str, Any], limit: float) -> bytes:
        """``POST /v2/<model>`` within ``limit`` seconds; the answer's body.

        A submit sent but never answered (timeout, dropped connection) raises a not retryable
        :class:`ProviderUnavailable`: the job may exist and be billed, and Segmind documents no
        idempotency key. A 5xx answer or a connection never made stays retryable.
        """
        try:
            async with self.http.request(
                "POST", f"/v2/{model.slug}", model=model.slug, json_body=payload, timeout_s=limit
            ) as response:
                return await response.read()
        except NotSent:
            raise
        except ProviderUnavailable as exc:
            if exc.status is not None:  # Segmind answered 5xx: no job was queued
                raise
            lost = ProviderUnavailable(
                self.name,
                f"the v2 submit got no answer ({exc.detail}); not submitted again, as the job "
                "may exist and be billed (Segmind documents no idempotency key)",
                model=model.slug,
            )
            lost.retryable = False
            raise lost from None

    async def _run_v2(
        self, model: SegmindModel, payload: dict[str, Any], gate: RequestGate | None
    ) -> Synthesized:
        """Submit (or resume a job another process submitted: :attr:`Provider.jobs`), poll
        (each poll through ``gate``), fetch the result, download the audio."""
        limit = self._timeout(model)  # for the whole job: the submit, the polls, the result
        deadline = time.monotonic() + limit
        key = job_key(self.name, model.slug, payload)
        request_id = await self._recorded(key)
        resumed = request_id is not None
        if request_id is None:
            request_id = await self._queue(model, payload, limit)
            await self._record(key, request_id, limit)
        else:
            log.info("segmind %s: resuming job %s (submitted before)", model.slug, request_id)
        try:
            characters = 0 if resumed else len(str(payload.get("text", "")))
            queued = _Queued(request_id, deadline, limit, gate)
            result = await self._wait(model, queued, characters)
            output = result.get("output")
            if not isinstance(output, str) or not output:
                raise SynthesisFailed(
                    self.name, f"job {request_id} completed without output", model=model.slug
                )
            audio = await self._audio_from_value(model, output)
        except ProviderError as exc:
            exc.retryable = False  # the job exists and is billed: never submit it again
            await self._forget(key, request_id)
            raise
        await self._forget(key, request_id)
        metrics = result.get("metrics")
        usage = None
        # booked by whoever fetches the result, a resumed job too: its submitter died before it
        # could book it (it books a call once it has the audio); only a submitter still alive
        # that fetches it as well books it twice, on the safe side of a budget
        if isinstance(metrics, dict):
            usage = self._usage(
                _number(metrics.get("cost")), _number(metrics.get("remaining_credits"))
            )
        return Synthesized(audio, usage)

    async def _queue(self, model: SegmindModel, payload: dict[str, Any], limit: float) -> str:
        """Submit ``payload``; the job's ``request_id``."""
        body = await self._submit(model, payload, limit)
        try:
            submitted = json.loads(body)
        except ValueError:
            submitted = None
        request_id = submitted.get("request_id") if isinstance(submitted, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise SynthesisFailed(self.name, "the queue returned no request_id", model=model.slug)
        log.info("segmind %s: queued job %s", model.slug, request_id)
        return request_id

    async def _recorded(self, key: str) -> str | None:
        """The job another process submitted for ``key`` and did not finish; None: none (or
        the records cannot be read: then it is submitted, as with one process)."""
        if self.jobs is None:
            return None
        try:
            return await self.jobs.find(key)
        except Exception as exc:
            log.warning("segmind: queued jobs cannot be read (%s); submitting", exc)
            return None

    async def _record(self, key: str, request_id: str, limit: float) -> None:
        if self.jobs is None:
            return
        try:
            await self.jobs.record(key, request_id, limit)
        except Exception as exc:  # the job is paid for: poll it all the same
            log.warning("segmind job %s: not recorded (%s); polling it", request_id, exc)

    async def _forget(self, key: str, request_id: str) -> None:
        if self.jobs is None:
            return
        try:
            await self.jobs.forget(key, request_id)
        except Exception as exc:  # it lapses with the job's timeout
            log.warning("segmind job %s: record not removed (%s)", request_id, exc)

    async def _wait(self, model: SegmindModel, job: _Queued, characters: int) -> dict[str, Any]:
        """Poll until COMPLETED; return the result body. Never resubmits. ``characters``: the
        text's length, to predict its completion; 0 for a resumed job (nothing predicted)."""
        submitted = time.monotonic()
        request_id, deadline, limit = job.request_id, job.deadline, job.limit
        estimate = self.estimates.setdefault(model.slug, CompletionEstimate())
        poll = self.settings.poll
        expected = estimate.predict(characters) if characters else None  # 0: resumed, unknown
        plan = PollPlan(poll.first_s, poll.factor, poll.max_s, expected, estimate.spread)
        hint: float | None = None
        last_pending = 0.0
        while True:
            elapsed = time.monotonic() - submitted
            wait = plan.next_wait(elapsed, hint)
            hint = None
            if submitted + elapsed + wait > deadline:
                raise ProviderUnavailable(
                    self.name,
                    f"job {request_id} did not finish within {limit:g} s",
                    model=model.slug,
                )
            await asyncio.sleep(wait)
            polled_at = time.monotonic() - submitted
            try:
                status = await self._get(f"/v2/requests/{request_id}/status", model, job)
            except RateLimited as exc:
                hint = exc.retry_after_s
                continue
            except ProviderUnavailable as exc:
                log.warning("segmind job %s: status poll failed (%s); polling on", request_id, exc)
                continue
            state = str(status.get("status", "")).upper()
            if state == "COMPLETED":
                if characters:  # a resumed job was submitted at a time not known here
                    estimate.observe(characters, last_pending, polled_at)
                break
            if state == "FAILED":
                raise SynthesisFailed(
                    self.name,
                    f"job {request_id} failed: {status.get('error') or 'no reason given'}",
                    model=model.slug,
                )
            last_pending = polled_at
        while True:  # the result, with the same patience for 429 and 5xx
            try:
                return await self._get(f"/v2/requests/{request_id}", model, job)
            except RateLimited as exc:
                await asyncio.sleep(max(exc.retry_after_s or 1.0, 0.1))
            except ProviderUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(poll.first_s)

    async def _get(self, path: str, model: SegmindModel, job: _Queued) -> dict[str, Any]:
        """GET a job's status or result, after its gate lets it start; the JSON object."""
        request_id = job.request_id
        if job.gate is not None:
            try:
                await job.gate(max(job.deadline - time.monotonic(), 0.0))
            except TimeoutError as exc:
                raise ProviderUnavailable(
                    self.name,
                    f"job {request_id} did not finish within {job.limit:g} s: {exc}",
                    model=model.slug,
                ) from None
        try:
            async with self.http.request("GET", path, model=model.slug) as response:
                raw = await response.read()
        except SynthesisFailed as exc:  # 422: FAILED, with Segmind's reason
            raise SynthesisFailed(
                self.name, f"job {request_id} failed: {exc.detail}", model=model.slug, status=422
            ) from None
        except ProviderNotFound as exc:
            raise JobExpired(
                self.name,
                f"job {request_id} is unknown or expired (results are kept 1 hour): {exc.detail}",
                model=model.slug,
                status=404,
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SynthesisFailed(
                self.name, f"job {request_id}: the answer is not a JSON object", model=model.slug
            )
        return body

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass(frozen=True, slots=True)
class _Queued:
    """A submitted v2 job: its id, deadline (``time.monotonic()``), timeout (s) and gate."""

    request_id: str
    deadline: float
    limit: float
    gate: RequestGate | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
