"""The provider interface and the registry that finds providers by name.

A provider is one module in ``integrations/`` holding a :class:`Provider` subclass, plus one
entry in ``integrations.PROVIDERS`` (or an entry point in the ``oyez.providers`` group); nothing
in ``bot/`` names a provider. It turns a :class:`SynthesisJob` into audio in whatever encoding
its engine or API produces, returned as :class:`Synthesized` with the call's :class:`Usage`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from bot.errors import (
    ConfigError,
    InvalidOptions,
    UnknownModel,
    UnknownProvider,
    UnknownVoice,
    validation_problems,
)
from bot.ops.config import LimitSettings, Settings, format_validation_error
from bot.speech import AudioChunk, Voice

if TYPE_CHECKING:
    from bot.providers.jobs import QueuedJobs

__all__ = [
    "ENTRY_POINT_GROUP",
    "TYPICAL_CHARACTERS",
    "KeptVoices",
    "NoOptions",
    "Provider",
    "ProviderRegistry",
    "RequestGate",
    "SynthesisJob",
    "Synthesized",
    "Usage",
    "api_key",
    "character_cost",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "oyez.providers"


class NoOptions(BaseModel):
    """Options model of a provider or model that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call cost, as the provider reported it (USD), and its rate-limit headroom
    (calls left in its window, seconds until the window resets); None where it did not say."""

    cost_usd: float | None = None
    remaining_credits: float | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset_s: float | None = None


#: Awaited before each further request a call makes (a queued job's status polls): returns
#: when the rate limit lets it start, raises ``TimeoutError`` after the given seconds (None:
#: no bound).
RequestGate = Callable[[float | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SynthesisJob:
    """What a provider synthesizes: ``text`` already normalised, ``options`` already validated.
    ``gate``, set by the dispatcher, paces the call's further requests (None: unpaced).
    ``pcm_pieces``: the caller plays PCM as it comes, so a provider that can
    (:meth:`Provider.streams_pcm`) yields a sentence in pieces, as they are made."""

    request_id: str
    text: str
    voice: Voice
    options: Mapping[str, Any] = field(default_factory=dict)
    gate: RequestGate | None = field(default=None, compare=False)
    pcm_pieces: bool = False


@dataclass(frozen=True, slots=True)
class Synthesized:
    """Audio a provider delivered, with the :class:`Usage` it learned delivering it (None when
    it learned nothing new). A stream yields one per piece; the last usage given counts."""

    chunk: AudioChunk
    usage: Usage | None = None


#: Characters a call of a provider billed by the character is assumed to carry when its cost is
#: checked against a budget or the balance before it is made (the cost recorded after is exact).
TYPICAL_CHARACTERS = 100


def character_cost(usd_per_million: float | None, characters: int) -> float | None:
    """USD for ``characters`` at ``usd_per_million`` per million characters (None: unknown)."""
    return None if usd_per_million is None else characters * usd_per_million / 1e6


class KeptVoices:
    """A provider's voice list, fetched once and then kept ``ttl_s`` seconds (0: asked every
    time); one fetch at a time, so callers arriving meanwhile take its answer."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._kept: tuple[float, list[Voice]] | None = None  # (monotonic expiry, voices)
        self._lock = asyncio.Lock()

    async def get(self, fetch: Callable[[], Awaitable[list[Voice]]]) -> list[Voice]:
        """The kept list, else ``fetch()``'s (kept when ``ttl_s`` > 0). Raises what ``fetch``
        raises; a failed fetch is not kept."""
        async with self._lock:
            if self._kept is not None and self._kept[0] > time.monotonic():
                return self._kept[1]
            voices = await fetch()
            if self.ttl_s > 0:
                self._kept = (time.monotonic() + self.ttl_s, voices)
            return voices


def api_key(configured: SecretStr | None, env_var: str | None) -> str | None:
    """The configured key, else ``$env_var`` (None: look in no environment variable)."""
    key = configured.get_secret_value() if configured else None
    if not key and env_var:
        key = os.environ.get(env_var)
    return key or None


class Provider(ABC):
    """A text-to-speech engine or API.

    Subclasses set ``kind`` (the implementation's name) and ``settings_model`` (validates
    ``providers.<name>``) and implement :meth:`list_voices`, :meth:`default_voice_id` and
    :meth:`synthesize`; those that stream override :meth:`stream` and set ``streams = True``.
    ``name`` is the configured instance's name: usually ``kind``, but several instances of one
    kind may be configured (``providers: {kokoro: {type: openai, base_url: ...}}``).
    """

    kind: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]] = NoOptions
    #: True when :meth:`stream` yields audio before synthesis of the whole text is done.
    streams: ClassVar[bool] = False
    #: True when calls cost money: credits, budgets and the credit circuit then apply.
    paid: ClassVar[bool] = False
    #: The provider's documented rate limit (``rate_limits.providers.<name>`` overrides it).
    default_limits: ClassVar[LimitSettings] = LimitSettings()

    def __init__(self, settings: Any, app_settings: Settings, name: str | None = None) -> None:
        self.name = name or self.kind
        self.settings = settings
        self.app_settings = app_settings
        #: Where a provider with a queue (Segmind v2) records the jobs it submitted, so that
        #: another process resumes one (set by the registry; None: not recorded).
        self.jobs: QueuedJobs | None = None

    @classmethod
    def from_settings(cls, app_settings: Settings, name: str | None = None) -> Self:
        """Build the provider from its ``providers.<name>`` section. Raises ConfigError."""
        name = name or cls.kind
        section = app_settings.provider_section(name)
        section.pop("type", None)
        try:
            settings = cls.settings_model.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"providers.{name}")) from None
        return cls(settings, app_settings, name)

    def configuration_problem(self) -> str | None:
        """Why this provider cannot be used as configured (e.g. no API key), or None."""
        return None

    @abstractmethod
    async def list_voices(self) -> list[Voice]:
        """Every voice this provider offers now."""

    @abstractmethod
    def default_voice_id(self) -> str:
        """The voice used when a request names none."""

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - a Provider hook; overrides read it
        """The pydantic model validating request options for ``voice``'s model."""
        return NoOptions

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any] | None:  # noqa: ARG002 - a Provider hook; overrides read them
        """The options that make ``voice`` speak ``speed`` times its normal rate (1.0 normal,
        2.0 twice as fast), or None when its model has no rate option (the speed is ignored).
        None by default."""
        return None

    def validate_options(self, voice: Voice, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in. Raises :class:`InvalidOptions`."""
        try:
            validated = self.options_model(voice).model_validate(dict(options))
        except ValidationError as exc:
            problems = validation_problems(exc, "options", unknown="unknown option")
            raise InvalidOptions(self.name, voice.model, problems) from None
        return validated.model_dump(exclude_none=True)

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """The :class:`Voice` a request means: by id or display name, case-insensitively.

        Raises :class:`UnknownVoice` / :class:`UnknownModel` listing what exists.
        """
        voices = await self.list_voices()
        if model is not None:
            models = {v.model for v in voices}
            if model not in models:
                raise UnknownModel(model, self.name, models)
            voices = [v for v in voices if v.model == model]
        wanted = (voice or self.default_voice_id()).casefold()
        for candidate in voices:
            if wanted in (candidate.id.casefold(), candidate.name.casefold()):
                return candidate
        raise UnknownVoice(voice or self.default_voice_id(), [v.id for v in voices], self.name)

    def engine_version(self, voice: Voice) -> str:
        """What identifies the engine behind ``voice`` for the audio cache: when it changes,
        cached audio is no longer used. Cloud providers cannot see their engines change."""
        return f"{self.kind}/{voice.model}"

    def estimated_cost(self, voice: Voice) -> float | None:  # noqa: ARG002 - a Provider hook; overrides read it
        """The usual cost of one call with ``voice`` in USD, or None when unknown."""
        return None

    async def check_credits(self) -> float | None:
        """Remaining credits (USD) from a free endpoint; None when the provider has none.

        Raises :class:`bot.errors.ProviderError` when the check itself fails.
        """
        return None

    async def local_problems(self) -> list[tuple[str, str]]:
        """What ``oyez check-config`` reports about this provider's own files, without the
        network: ``(key in providers.<name>, problem)`` pairs, such as a voice file or folder
        that does not exist. None by default."""
        return []

    async def warm_up(self, voice: Voice) -> None:  # noqa: B027 - optional hook
        """Load what synthesis of ``voice`` needs (a model, a session) ahead of the first call."""

    @abstractmethod
    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        """The whole utterance as one chunk. Raises :class:`bot.errors.ProviderError`."""

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        """Audio as it becomes available; by default the whole utterance as one chunk."""
        yield await self.synthesize(job)

    def streams_live(self, job: SynthesisJob) -> bool:  # noqa: ARG002 - a Provider hook; overrides read it
        """Whether :meth:`stream` yields ``job``'s audio in pieces while a sentence is still
        being synthesized (a streaming API), so a sink can play it as it arrives. False by
        default, and for engines that yield whole sentences: their audio is better normalised
        in one piece."""
        return False

    def streams_pcm(self, job: SynthesisJob) -> bool:  # noqa: ARG002 - a Provider hook; overrides read it
        """Whether :meth:`stream` yields ``job``'s audio (with ``pcm_pieces``) as PCM s16le mono
        in pieces while a sentence is being made, for a sink that plays PCM (Wyoming). False by
        default."""
        return False

    async def prepare_streaming(self, voice: Voice) -> bool:  # noqa: ARG002 - a Provider hook
        """Make ready what :meth:`streams_pcm` needs for ``voice``; whether it streams now.
        Raises :class:`bot.errors.ProviderError` when it cannot be made ready."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and models."""


def _load_target(target: str) -> type[Provider]:
    module_name, _, attr = target.partition(":")
    provider_cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(provider_cls, type) and issubclass(provider_cls, Provider)):
        raise TypeError(f"{target} is not a Provider subclass")
    return provider_cls


class ProviderRegistry:
    """Finds providers by name and keeps one instance of each.

    ``targets`` maps a provider name to ``"module:Class"``; the module is imported only when the
    provider is first used, so an unused provider costs nothing (Piper's model, a cloud client).
    """

    def __init__(self, settings: Settings, targets: Mapping[str, str]) -> None:
        self.settings = settings
        self._targets = dict(targets)
        self._instances: dict[str, Provider] = {}
        #: Given to every provider built (:attr:`Provider.jobs`): the engine's, when shared.
        self.jobs: QueuedJobs | None = None

    @classmethod
    def default(cls, settings: Settings) -> ProviderRegistry:
        """The built-in providers (``integrations.PROVIDERS``) plus installed plug-ins."""
        from integrations import PROVIDERS

        targets = dict(PROVIDERS)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            targets.setdefault(ep.name, ep.value)
        return cls(settings, targets)

    def _target(self, name: str) -> str | None:
        """The implementation of ``name``: a built-in, or a configured instance's ``type``."""
        if name in self._targets:
            return self._targets[name]
        kind = self.settings.providers.get(name, {}).get("type")
        return self._targets.get(str(kind).lower()) if kind else None

    def names(self) -> list[str]:
        """Every provider that can be asked for: built-ins and configured instances."""
        return sorted(set(self._targets) | {n for n in self.settings.providers if self._target(n)})

    def get(self, name: str) -> Provider:
        """The provider called ``name``. Raises :class:`UnknownProvider`, :class:`ConfigError`."""
        key = name.strip().lower()
        instance = self._instances.get(key)
        if instance is not None:
            return instance
        instance = self.implementation(name).from_settings(self.settings, key)
        instance.jobs = self.jobs
        self._instances[key] = instance
        return instance

    def implementation(self, name: str) -> type[Provider]:
        """The class behind ``name``, without building it (its module is imported). Raises
        :class:`UnknownProvider`, or :class:`ConfigError` for an unknown ``type``."""
        key = name.strip().lower()
        target = self._target(key)
        if target is None:
            kind = self.settings.providers.get(key, {}).get("type")
            if kind:
                raise ConfigError(
                    f"providers.{key}.type: unknown provider type {kind!r}; "
                    f"known types: {', '.join(sorted(self._targets))}"
                )
            raise UnknownProvider(name, self.names())
        return _load_target(target)

    async def aclose(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            try:
                await instance.aclose()
            except Exception:
                log.exception("closing provider %s failed", instance.name)
