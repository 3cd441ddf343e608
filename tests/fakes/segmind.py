"""A fake Segmind serverless API (``https://api.segmind.com``), as documented.

Routes:

- ``POST /v1/{model}`` (sync): the audio itself, or JSON with a media URL / base64 when configured;
  headers ``x-cost``, ``x-remaining-credits``, ``x-generation-time``, ``x-request-id`` (and
  ``x-seed-value`` for models with a seed).
- ``POST /v2/{model}`` (async, only models whose page documents it) → ``request_id``,
  ``status_url``, ``response_url``; ``GET /v2/requests/{id}/status``; ``GET /v2/requests/{id}``.
- ``GET /v1/get-user-credits`` → ``{"credits": .., "free-credits": ..}`` (never billed).
- ``GET /media/{name}``: the media URLs handed out (stands in for Segmind's storage; no auth).

Checks, in order: ``x-api-key`` (401; ``Authorization: Bearer`` is not accepted), rate limit (429
with ``x-rate-limit-reset-at-utc``), model (404), ``Content-Type: application/json`` (406
"Invalid content type"), body against the model's parameter table (400 naming the field), credits
(406, nothing billed). Every error body is ``{"error": "..."}``.

Over 450 lines: every documented route, header and error of the API, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlparse

from aiohttp import web

from tests.fakes.audio import Synthesizer, encode_with_ffmpeg, run_synthesizer, wav_bytes
from tests.fakes.base import BilledCall, Clock, FakeServer, RateLimiter, ScriptedResponse

__all__ = [
    "FREE_RATE_LIMIT",
    "MODELS",
    "PRO_RATE_LIMIT",
    "RESULT_TTL",
    "FakeSegmind",
    "Job",
    "Param",
    "SegmindModel",
    "validate",
]

FREE_RATE_LIMIT = 5  # requests per minute, Free plan (tts-apis.md)
PRO_RATE_LIMIT = 50  # requests per minute, Pro plan (tts-apis.md)
RESULT_TTL = 3600.0  # v2 results are retained for 1 hour (v2 pages)
DEFAULT_API_KEY = "test-segmind-key"

SyncResponse = Literal["audio", "json_url", "json_base64"]
Status = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]


@dataclass(frozen=True)
class Param:
    """One row of a model page's parameter table."""

    kind: Literal["string", "uri", "number", "integer", "boolean"]
    required: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegmindModel:
    slug: str
    cost: float  # dollars per call
    async_v2: bool  # the model's page documents POST /v2/{slug}
    params: Mapping[str, Param]


_TEXT = Param("string", required=True)
_REPETITION = Param("number", low=1, high=2)
_UNIT = Param("number", low=0, high=1)

MODELS: dict[str, SegmindModel] = {
    # seed 000: "~117.52s ~$0.124"; no v2 section on the page.
    "orpheus-3b-0.1": SegmindModel(
        "orpheus-3b-0.1",
        0.124,
        False,
        {
            "text": _TEXT,
            "max_new_tokens": Param("integer", low=100, high=2000),
            "repetition_penalty": _REPETITION,
            "temperature": Param("number", low=0.1, high=1.5),
            "top_p": Param("number", low=0.1, high=1),
            "voice": Param("string", choices=("tara", "dan", "josh", "emma")),
        },
    ),
    # seed 001: "~18.08s ~$0.02"; reference_audio optional; no v2 section on the page.
    "chatterbox-tts": SegmindModel(
        "chatterbox-tts",
        0.02,
        False,
        {
            "text": _TEXT,
            "cfg_weight": Param("number", low=0, high=2),
            "exaggeration": Param("number", low=0, high=2),
            "min_p": _UNIT,
            "reference_audio": Param("uri"),
            "repetition_penalty": _REPETITION,
            "seed": Param("integer"),
            "temperature": Param("number", low=0, high=2),
            "top_p": _UNIT,
        },
    ),
    # seed 002 gives no price: assumed $0.01 ("ultra-fast", about half of Chatterbox's ~$0.02).
    "chatterbox-turbo-tts": SegmindModel(
        "chatterbox-turbo-tts",
        0.01,
        True,
        {
            "reference_audio": Param("uri", required=True),
            "text": _TEXT,
            "min_p": _UNIT,
            "norm_loudness": Param("boolean"),
            "repetition_penalty": _REPETITION,
            "seed": Param("integer"),
            "temperature": Param("number", low=0.05, high=2),
            "top_k": Param("integer", low=0, high=1000),
            "top_p": _UNIT,
        },
    ),
    # seed 003 gives no price, only "~10.58s": at the ~$0.00106/s the other two pages imply
    # (0.124/117.52, 0.02/18.08) that is ~$0.011.
    "openvoice": SegmindModel(
        "openvoice",
        0.011,
        True,
        {
            "input_audio": Param("uri", required=True),
            "speed": Param("number", required=True, low=0.5, high=2),
            "text": _TEXT,
            # The page lists 10 of 11 values "+1 more"; EN_AU (OpenVoice's remaining English
            # accent) is an assumption.
            "language": Param(
                "string",
                choices=(
                    "EN_NEWEST",
                    "EN",
                    "ES",
                    "FR",
                    "ZH",
                    "JP",
                    "KR",
                    "EN_US",
                    "EN_BR",
                    "EN_INDIA",
                    "EN_AU",
                ),
            ),
        },
    ),
}


def _number(value: float) -> str:
    return f"{value:g}"


def _amount(value: float) -> str:
    return repr(round(value, 10))


def _problem(param: Param, value: Any) -> str | None:
    if param.kind in ("string", "uri"):
        if not isinstance(value, str):
            return "must be a string"
        if param.required and not value.strip():
            return "must not be empty"
        if param.kind == "uri":
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                return "must be an http(s) URL"
        if param.choices and value not in param.choices:
            return "must be one of " + ", ".join(param.choices)
        return None
    if param.kind == "boolean":
        return None if isinstance(value, bool) else "must be a boolean"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a {param.kind}"
    if param.kind == "integer" and not float(value).is_integer():
        return "must be an integer"
    too_low = param.low is not None and value < param.low
    too_high = param.high is not None and value > param.high
    if too_low or too_high:
        low = _number(param.low) if param.low is not None else "-inf"
        high = _number(param.high) if param.high is not None else "inf"
        return f"must be between {low} and {high}"
    return None


def validate(model: SegmindModel, body: Mapping[str, Any]) -> str | None:
    """The first problem with ``body`` for ``model``, naming the field; None if valid.

    Unknown fields are ignored (the pages do not say they are rejected).
    """
    for name, param in model.params.items():
        if body.get(name) is None:
            if param.required:
                return f"Missing required parameter '{name}'"
            continue
        problem = _problem(param, body[name])
        if problem:
            return f"Invalid parameter '{name}': {problem}"
    return None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass
class _Media:
    data: bytes
    content_type: str
    created_at: float


@dataclass
class Job:
    """A v2 request. ``polls`` counts status polls; ``status`` is the last status reported."""

    request_id: str
    model: str
    text: str
    submitted_at: float
    cost: float
    remaining_credits: float
    synthesis: asyncio.Task[tuple[bytes, str, float]]
    error: str | None = None
    polls: int = 0
    status: Status = "QUEUED"
    finished_at: float | None = None
    inference_time: float = 0.0
    media: str = field(default="")


class FakeSegmind(FakeServer):
    """Simulated ``api.segmind.com``.

    Args:
        api_key: the one valid ``x-api-key``.
        credits, free_credits: the account balance in dollars; calls use free credits first.
        costs: dollars per call by model slug (defaults: :data:`MODELS`).
        rate_limit_per_minute: None for unlimited, :data:`FREE_RATE_LIMIT` (5) like Free. Every
            authenticated call counts (credit checks and v2 polls too); media downloads do not.
        sync_response: what ``POST /v1`` returns: ``"audio"`` (the body is the audio),
            ``"json_url"`` (``{"output": "<media URL>"}``) or ``"json_base64"``
            (``{"audio": "<base64>"}``); see ``json_key`` to rename the key.
        audio_format: ``"wav"`` or ``"mp3"`` (through ffmpeg).
        audio_content_type: Content-Type for ``"audio"`` replies (default from the format:
            ``audio/wav`` / ``audio/mpeg``; e.g. ``application/octet-stream``).
        v2_models: slugs with a v2 endpoint (default: the models whose page documents it).
        v2_queued_polls, v2_processing_polls: status polls answered QUEUED, then PROCESSING,
            before the terminal status (poll-driven progression, the default).
        v2_queued_seconds, v2_processing_seconds: if either is set, progression follows the
            clock instead: QUEUED then PROCESSING for these many seconds after the submit.
        failed_status_http: HTTP status of a FAILED *status poll*; the result endpoint always
            serves FAILED as 422 (v2 pages), the status endpoint's code is not documented.
        result_ttl: seconds a v2 result is kept (1 hour).
        synthesizer, clock: see :class:`~tests.fakes.base.FakeServer`.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        credits: float = 10.0,
        free_credits: float = 0.0,
        costs: Mapping[str, float] | None = None,
        rate_limit_per_minute: int | None = None,
        sync_response: SyncResponse = "audio",
        json_key: str | None = None,
        audio_format: Literal["wav", "mp3"] = "wav",
        audio_content_type: str | None = None,
        v2_models: Iterable[str] | None = None,
        v2_queued_polls: int = 1,
        v2_processing_polls: int = 1,
        v2_queued_seconds: float | None = None,
        v2_processing_seconds: float | None = None,
        failed_status_http: int = 200,
        result_ttl: float = RESULT_TTL,
        synthesizer: Synthesizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(synthesizer=synthesizer, clock=clock)
        self.api_key = api_key
        self.credits = credits
        self.free_credits = free_credits
        self.costs = {slug: model.cost for slug, model in MODELS.items()} | dict(costs or {})
        self.limiter = RateLimiter(rate_limit_per_minute, self.clock)
        self.sync_response: SyncResponse = sync_response
        self.json_key = json_key
        self.audio_format = audio_format
        self.audio_content_type = audio_content_type
        default_v2 = (slug for slug, model in MODELS.items() if model.async_v2)
        self.v2_models = set(default_v2 if v2_models is None else v2_models)
        self.v2_queued_polls = v2_queued_polls
        self.v2_processing_polls = v2_processing_polls
        self.v2_queued_seconds = v2_queued_seconds
        self.v2_processing_seconds = v2_processing_seconds
        self.failed_status_http = failed_status_http
        self.result_ttl = result_ttl
        self.jobs: dict[str, Job] = {}
        self._media: dict[str, _Media] = {}
        self._failures: deque[str] = deque()
        self._hangs: deque[float] = deque()
        self._free_part: dict[int, float] = {}

    # -- public helpers for tests ---------------------------------------------------------------
    @property
    def remaining_credits(self) -> float:
        return self.credits + self.free_credits

    def fail_next_job(self, error: str = "Inference failed: content blocked") -> None:
        """The next v2 submit is accepted and billed, then ends FAILED with ``error``."""
        self._failures.append(error)

    def hang_next_submit(self, seconds: float) -> None:
        """The next v2 submit is accepted and billed, then answered only after ``seconds``."""
        self._hangs.append(seconds)

    def fail_job(self, request_id: str, error: str = "Inference failed") -> None:
        """Make a submitted, not yet finished job end FAILED."""
        self.jobs[request_id].error = error

    def inject_error(
        self,
        path: str,
        status: int,
        message: str,
        *,
        method: str = "POST",
        count: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Script ``count`` Segmind-shaped errors (``{"error": message}``) for ``path``."""
        reply = ScriptedResponse(status, {"error": message}, headers or {})
        self.script(method, path, *([reply] * count))

    def rate_limit_headers(self) -> dict[str, str]:
        reset = datetime.fromtimestamp(math.ceil(self.limiter.reset_at()), UTC)
        # Header names from tts-apis.md; the value's format is not documented: ISO 8601 UTC here.
        return {
            "x-rate-limit-reset-at-utc": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-rate-limit-remaining": str(self.limiter.remaining),
        }

    # -- routes -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/get-user-credits", self._get_credits)
        app.router.add_post("/v1/{model}", self._sync)
        app.router.add_post("/v2/{model}", self._submit)
        app.router.add_get("/v2/requests/{request_id}/status", self._status)
        app.router.add_get("/v2/requests/{request_id}", self._result)
        app.router.add_get("/media/{name}", self._get_media)

    async def stop(self) -> None:
        pending = [job.synthesis for job in self.jobs.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await super().stop()

    def _gate(self, request: web.Request) -> web.Response | None:
        """Authentication, then the rate limit."""
        key = request.headers.get("x-api-key")
        if key is None:
            if request.headers.get("Authorization", "").lower().startswith("bearer "):
                return _error(401, "Unauthorized: use the x-api-key header, Bearer is not accepted")
            return _error(401, "Unauthorized: missing API key (x-api-key header)")
        if key != self.api_key:
            return _error(401, "Unauthorized: invalid API key")
        if not self.limiter.acquire():
            limit = self.limiter.limit
            message = f"Rate limit exceeded: {limit} requests per minute"
            return _error(
                429, message, {**self.rate_limit_headers(), "x-rate-limit-remaining": "0"}
            )
        return None

    def _extra_headers(self) -> dict[str, str]:
        return self.rate_limit_headers() if self.limiter.limit is not None else {}

    async def _parse(
        self, request: web.Request, v2: bool
    ) -> tuple[SegmindModel, dict[str, Any]] | web.Response:
        slug = request.match_info["model"]
        model = MODELS.get(slug)
        if model is None:
            return _error(404, f"Model '{slug}' not found")
        if v2 and slug not in self.v2_models:
            return _error(404, f"Model '{slug}' has no async (v2) endpoint")
        if "Content-Type" not in request.headers or request.content_type != "application/json":
            return _error(406, "Invalid content type")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Invalid request body: not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "Invalid request body: expected a JSON object")
        problem = validate(model, body)
        if problem is not None:
            return _error(400, problem)
        return model, body

    def _charge(self, model: SegmindModel, text: str) -> BilledCall | None:
        """Bill one call; None (and nothing billed) when the balance does not cover it."""
        cost = self.costs[model.slug]
        if cost > self.remaining_credits + 1e-12:
            return None
        from_free = min(self.free_credits, cost)
        self.free_credits -= from_free
        self.credits -= cost - from_free
        call = BilledCall(model.slug, text, cost)
        self.billed.append(call)
        self._free_part[id(call)] = from_free
        return call

    def _refund(self, call: BilledCall) -> None:
        from_free = self._free_part.pop(id(call), 0.0)
        self.free_credits += from_free
        self.credits += call.cost - from_free
        self.billed.remove(call)

    async def _render(self, text: str) -> tuple[bytes, str, float]:
        """(audio, its Content-Type, seconds spent)."""
        started = time.perf_counter()
        pcm, rate = await run_synthesizer(self.synthesizer, text)
        if self.audio_format == "mp3":
            data, content_type = await encode_with_ffmpeg(pcm, rate, "mp3"), "audio/mpeg"
        else:
            data, content_type = wav_bytes(pcm, rate), "audio/wav"
        return data, content_type, time.perf_counter() - started

    def _store_media(self, request: web.Request, name: str, data: bytes, content_type: str) -> str:
        extension = "mp3" if content_type == "audio/mpeg" else "wav"
        filename = f"{name}.{extension}"
        self._media[filename] = _Media(data, content_type, self.clock())
        return f"{request.url.origin()}/media/{filename}"

    # -- v1 -----------------------------------------------------------------------------------
    async def _get_credits(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied is not None:
            return denied
        body = {"credits": self.credits, "free-credits": self.free_credits}
        return web.json_response(body, headers=self._extra_headers())

    async def _sync(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied is not None:
            return denied
        parsed = await self._parse(request, v2=False)
        if isinstance(parsed, web.Response):
            return parsed
        model, body = parsed
        call = self._charge(model, body["text"])
        if call is None:
            return _error(406, "Insufficient credits")
        try:
            audio, content_type, seconds = await self._render(body["text"])
        except Exception as exc:
            self._refund(call)
            return _error(500, f"Internal server error: {exc}")
        request_id = str(uuid.uuid4())
        headers = {
            "x-cost": _amount(call.cost),
            "x-remaining-credits": _amount(self.remaining_credits),
            "x-generation-time": f"{seconds:.3f}",
            "x-request-id": request_id,
            **self._extra_headers(),
        }
        if "seed" in model.params:
            headers["x-seed-value"] = str(body.get("seed", 42))
        if self.sync_response == "json_url":
            url = self._store_media(request, request_id, audio, content_type)
            return web.json_response({self.json_key or "output": url}, headers=headers)
        if self.sync_response == "json_base64":
            encoded = base64.b64encode(audio).decode()
            return web.json_response({self.json_key or "audio": encoded}, headers=headers)
        headers["Content-Type"] = self.audio_content_type or content_type
        return web.Response(body=audio, headers=headers)

    async def _get_media(self, request: web.Request) -> web.StreamResponse:
        media = self._media.get(request.match_info["name"])
        if media is None or self.clock() - media.created_at >= self.result_ttl:
            return _error(404, "Not found")
        return web.Response(body=media.data, headers={"Content-Type": media.content_type})

    # -- v2 -----------------------------------------------------------------------------------
    async def _submit(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied is not None:
            return denied
        parsed = await self._parse(request, v2=True)
        if isinstance(parsed, web.Response):
            return parsed
        model, body = parsed
        call = self._charge(model, body["text"])
        if call is None:
            return _error(406, "Insufficient credits")
        request_id = str(uuid.uuid4())
        job = Job(
            request_id,
            model.slug,
            body["text"],
            self.clock(),
            call.cost,
            self.remaining_credits,
            asyncio.create_task(self._render(body["text"])),
            error=self._failures.popleft() if self._failures else None,
        )
        self.jobs[request_id] = job
        if self._hangs:
            await asyncio.sleep(self._hangs.popleft())
        origin = request.url.origin()
        reply = {
            "request_id": request_id,
            "status": "QUEUED",
            "status_url": f"{origin}/v2/requests/{request_id}/status",
            "response_url": f"{origin}/v2/requests/{request_id}",
            "model": model.slug,
        }
        return web.json_response(reply, headers=self._extra_headers())

    def _live_job(self, request_id: str) -> Job | None:
        job = self.jobs.get(request_id)
        if job is None:
            return None
        if self.clock() - (job.finished_at or job.submitted_at) >= self.result_ttl:
            del self.jobs[request_id]
            self._media.pop(job.media, None)
            return None
        return job

    def _stage(self, job: Job) -> Literal["QUEUED", "PROCESSING", "DONE"]:
        if self.v2_queued_seconds is not None or self.v2_processing_seconds is not None:
            elapsed = self.clock() - job.submitted_at
            queued = self.v2_queued_seconds or 0.0
            processing = queued + (self.v2_processing_seconds or 0.0)
            if elapsed >= processing:
                return "DONE"
            return "QUEUED" if elapsed < queued else "PROCESSING"
        # Poll-driven: the n-th status poll (n = job.polls, 1-based; 0 = not polled yet).
        queued = self.v2_queued_polls
        processing = queued + self.v2_processing_polls
        if job.polls > processing or processing == 0:
            return "DONE"
        return "QUEUED" if job.polls <= queued else "PROCESSING"

    async def _advance(self, job: Job, request: web.Request) -> Status:
        if job.status in ("COMPLETED", "FAILED"):
            return job.status
        stage = self._stage(job)
        if stage != "DONE":
            job.status = stage
            return stage
        try:
            audio, content_type, seconds = await job.synthesis
        except Exception as exc:
            job.error = job.error or f"Inference failed: {exc}"
        else:
            job.inference_time = seconds
            url = self._store_media(request, job.request_id, audio, content_type)
            job.media = url.rsplit("/", 1)[-1]
        job.status = "FAILED" if job.error else "COMPLETED"
        job.finished_at = self.clock()
        return job.status

    async def _status(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied is not None:
            return denied
        job = self._live_job(request.match_info["request_id"])
        if job is None:
            return _error(404, "Request not found or expired")
        job.polls += 1
        status = await self._advance(job, request)
        body: dict[str, Any] = {"request_id": job.request_id, "status": status}
        http = 200
        if status == "FAILED":
            body["error"] = job.error
            http = self.failed_status_http
        return web.json_response(body, status=http, headers=self._extra_headers())

    async def _result(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied is not None:
            return denied
        job = self._live_job(request.match_info["request_id"])
        if job is None:
            return _error(404, "Request not found or expired")
        status = await self._advance(job, request)
        body: dict[str, Any] = {"request_id": job.request_id, "status": status}
        if status == "FAILED":
            body["error"] = job.error
            return web.json_response(body, status=422, headers=self._extra_headers())
        if status == "COMPLETED":
            body["output"] = f"{request.url.origin()}/media/{job.media}"
            body["metrics"] = {
                "inference_time": round(job.inference_time, 3),
                "cost": job.cost,
                "remaining_credits": job.remaining_credits,
            }
        # Not finished yet: the pages do not say what the result endpoint answers; status only.
        return web.json_response(body, headers=self._extra_headers())
