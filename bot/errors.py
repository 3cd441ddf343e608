"""The one exception tree of Oyez.

Callers catch what they mean: ``InvalidRequest`` is the user's input (exit status 2 in the CLI,
an ephemeral reply in Discord, an ``oyez_announce_failed`` event in Home Assistant);
``ConfigError`` is the operator's configuration; everything else is a failure of a part
(a provider, ffmpeg) that the user did not cause.

Messages never contain secrets: they are built from names, values the user typed and the tail of a
tool's diagnostic output, never from headers or configuration values marked secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time an error arrives already made: pydantic is not imported for it
    from pydantic import ValidationError

__all__ = [
    "AudioError",
    "BadAudio",
    "BudgetExceeded",
    "ConfigError",
    "EmptyText",
    "FFmpegNotFound",
    "InsufficientCredits",
    "InvalidOptions",
    "InvalidRequest",
    "JobExpired",
    "NoProviderSpoke",
    "OyezError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNotFound",
    "ProviderRequestError",
    "ProviderUnavailable",
    "RateLimited",
    "RequestExpired",
    "SynthesisFailed",
    "TextTooLong",
    "TranscodeError",
    "UnknownModel",
    "UnknownProvider",
    "UnknownVoice",
    "validation_problems",
]


class OyezError(Exception):
    """Base of every error Oyez raises on purpose."""


class InvalidRequest(OyezError):
    """The request itself is wrong: fixing the input fixes it. Nothing was spent."""


class EmptyText(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("text is empty: there is nothing to speak")


class TextTooLong(InvalidRequest):
    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(
            f"text is too long: {length} characters, the limit is {limit} "
            "(max_text_length in the configuration)"
        )


def _allowed(values: Iterable[str], given: str, shown: int = 12) -> str:
    """Describe the allowed values, the closest ones to ``given`` first."""
    names = sorted(set(values))
    if not names:
        return "none are available"
    close = get_close_matches(given, names, n=3, cutoff=0.6)
    listed = ", ".join(names[:shown]) + (f", … ({len(names)} in all)" if len(names) > shown else "")
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}allowed: {listed}"


class UnknownProvider(InvalidRequest):
    def __init__(self, name: str, allowed: Iterable[str]) -> None:
        self.name = name
        super().__init__(f"unknown provider {name!r}; {_allowed(allowed, name)}")


class UnknownVoice(InvalidRequest):
    def __init__(self, name: str, allowed: Iterable[str], provider: str | None = None) -> None:
        self.name = name
        self.provider = provider
        where = f" for provider {provider!r}" if provider else ""
        super().__init__(f"unknown voice {name!r}{where}; {_allowed(allowed, name)}")


class UnknownModel(InvalidRequest):
    def __init__(self, name: str, provider: str, allowed: Iterable[str]) -> None:
        self.name = name
        self.provider = provider
        super().__init__(
            f"unknown model {name!r} for provider {provider!r}; {_allowed(allowed, name)}"
        )


class InvalidOptions(InvalidRequest):
    """Provider options failed validation; ``problems`` lists one line per bad option."""

    def __init__(self, provider: str, model: str, problems: list[str]) -> None:
        self.provider = provider
        self.model = model
        self.problems = problems
        super().__init__(f"invalid options for {provider}/{model}: " + "; ".join(problems))


class RequestExpired(OyezError):
    """The request passed its expiry before it could be spoken; it is dropped, never late."""

    def __init__(self, request_id: str, overdue_s: float, stage: str) -> None:
        self.request_id = request_id
        self.overdue_s = overdue_s
        self.stage = stage
        super().__init__(
            f"request {request_id} expired {overdue_s:.1f} s ago, {stage}; it was not spoken"
        )


class BudgetExceeded(OyezError):
    """A daily spend budget would be exceeded by this call; nothing was spent."""

    def __init__(self, provider: str, message: str) -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}")


class NoProviderSpoke(OyezError):
    """Neither the asked provider nor any in the fallback chain could speak.

    ``attempts`` holds (provider, why it did not speak) in the order tried.
    """

    def __init__(self, attempts: list[tuple[str, str]]) -> None:
        self.attempts = attempts
        tried = "; ".join(f"{name}: {why}" for name, why in attempts)
        super().__init__(f"no provider could speak ({tried})")


class ConfigError(OyezError):
    """The configuration (YAML file or OYEZ_* environment) is invalid."""


class ProviderError(OyezError):
    """A provider failed to synthesize.

    ``retryable`` says whether the same call may succeed later (rate limits, 5xx, timeouts);
    ``status`` is the HTTP status when there was one. Messages name the provider and model and
    quote the provider's own error text, never a key.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        model: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.detail = message
        where = f"{provider}/{model}" if model else provider
        http = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}: {message}{http}")


class BadAudio(ProviderError):
    """The provider answered with audio that cannot be played: undecodable, or too short for
    the text (a truncated file). It was billed; the fallback chain speaks instead."""


class ProviderRequestError(ProviderError):
    """The provider refused the request's parameters (HTTP 400)."""


class ProviderAuthError(ProviderError):
    """The API key is missing, wrong, or lacks permission (HTTP 401, 403)."""


class ProviderNotFound(ProviderError):
    """The model or endpoint does not exist at the provider (HTTP 404)."""


class JobExpired(ProviderNotFound):
    """A queued job's id is unknown or its result has expired (Segmind v2: HTTP 404)."""


class InsufficientCredits(ProviderError):
    """The account cannot pay for the call (Segmind: HTTP 406). Nothing was billed."""


class RateLimited(ProviderError):
    """Too many requests (HTTP 429). ``retry_after_s`` is the provider's hint, if it gave one."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retry_after_s: float | None,
        model: str | None = None,
        status: int | None = 429,
    ) -> None:
        self.retry_after_s = retry_after_s
        hint = f"; retry after {retry_after_s:.1f} s" if retry_after_s is not None else ""
        super().__init__(provider, f"{message}{hint}", model=model, status=status, retryable=True)


class ProviderUnavailable(ProviderError):
    """The provider is down or slow: HTTP 5xx, a timeout, a refused connection. Retryable."""

    def __init__(
        self, provider: str, message: str, *, model: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(provider, message, model=model, status=status, retryable=True)


class SynthesisFailed(ProviderError):
    """The provider accepted the job but produced no usable audio (a FAILED job, a content
    block, an unreadable response)."""


class AudioError(OyezError):
    """Audio could not be produced or converted."""


class FFmpegNotFound(AudioError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "no ffmpeg binary: install ffmpeg on the PATH, or the imageio-ffmpeg package, "
            f"or set audio.ffmpeg_path ({detail})"
        )


class TranscodeError(AudioError):
    """ffmpeg failed or timed out. ``stderr_tail`` holds the last lines ffmpeg printed."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str) -> None:
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        detail = f"\nffmpeg said:\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"{message}{detail}")


def validation_problems(
    error: ValidationError,
    whole: str,
    *,
    unknown: str = "unknown field",
    brief: bool = False,
    messages: Mapping[tuple[str, str], str] | None = None,
) -> list[str]:
    """``"name: problem"`` for each problem of ``error``: ``name`` the dotted field path
    (``whole`` for the value itself), ``unknown`` the problem of an extra key. Values are never
    echoed (they may be long or secret), except where a validator names them. ``brief`` (for
    requests) drops list indices, says ``required`` for a missing field, drops pydantic's
    ``Value error,`` prefix and repeated lines; ``messages`` replaces the message of a (name,
    error type) pair."""
    problems = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (brief and isinstance(p, int))]
        name = ".".join(str(p) for p in loc) or whole
        if item["type"] == "extra_forbidden":
            message = unknown
        elif brief and item["type"] == "missing":
            message = "required"
        else:
            message = item["msg"].removeprefix("Value error, ") if brief else item["msg"]
            message = (messages or {}).get((name, item["type"]), message)
        problems.append(f"{name}: {message}")
    return list(dict.fromkeys(problems)) if brief else problems
