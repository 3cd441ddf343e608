"""The one exception tree of Oyez.

Callers catch what they mean: ``InvalidRequest`` is the user's input (exit status 2 in the CLI,
an ephemeral reply in Discord, an ``oyez_announce_failed`` event in Home Assistant);
``ConfigError`` is the operator's configuration; everything else is a failure of a part
(a provider, ffmpeg) that the user did not cause.

Messages never contain secrets: they are built from names, values the user typed and the tail of a
tool's diagnostic output, never from headers or configuration values marked secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches

__all__ = [
    "AudioError",
    "ConfigError",
    "EmptyText",
    "FFmpegNotFound",
    "InvalidOptions",
    "InvalidRequest",
    "OyezError",
    "ProviderError",
    "RequestExpired",
    "TextTooLong",
    "TranscodeError",
    "UnknownModel",
    "UnknownProvider",
    "UnknownVoice",
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


class ConfigError(OyezError):
    """The configuration (YAML file or OYEZ_* environment) is invalid."""


class ProviderError(OyezError):
    """A provider failed to synthesize. ``retryable`` says whether trying again may help."""

    def __init__(self, provider: str, message: str, *, retryable: bool = False) -> None:
        self.provider = provider
        self.retryable = retryable
        super().__init__(f"{provider}: {message}")


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
