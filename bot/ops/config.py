"""Configuration: one YAML file plus ``OYEZ_*`` environment variables.

Precedence, highest first: environment variables (``OYEZ_`` prefix, ``__`` between nesting
levels, e.g. ``OYEZ_AUDIO__LOUDNESS_TARGET_LUFS=-18``), then the YAML file, then the defaults
below. The YAML file is ``--config PATH``, else ``$OYEZ_CONFIG``, else ``./oyez.yaml`` if it
exists. Every key is documented in ``config/oyez.example.yaml``.

Provider sections (``providers: {piper: {...}}``) are kept as plain mappings here and validated by
each provider's own settings model, so adding a provider never edits this module.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bot.errors import ConfigError, validation_problems

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ROLES",
    "AnnounceSettings",
    "AudioSettings",
    "BudgetSettings",
    "CacheSettings",
    "CreditSettings",
    "DiscordChannel",
    "EngineSettings",
    "HttpSettings",
    "LimitSettings",
    "Mp3Rate",
    "NamedVoice",
    "QuietHours",
    "RateLimitSettings",
    "Role",
    "RunSettings",
    "Settings",
    "SynthSettings",
    "format_validation_error",
    "from_sources",
    "known_zone",
    "load",
    "onnx_threads",
    "source_file",
    "split_roles",
]

DEFAULT_CONFIG_FILE = Path("oyez.yaml")


def known_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ``ValueError`` naming it when there is none (an
    unknown name, a malformed one, or one too long to be a file name)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Paris)"
        ) from None


_yaml_file: ContextVar[Path | None] = ContextVar("oyez_yaml_file", default=None)


#: The rates (Hz) an MP3 frame can have: MPEG-1 (ISO/IEC 11172-3), MPEG-2 (ISO/IEC 13818-3) and
#: MPEG-2.5 (LAME's extension) Layer III.
Mp3Rate = Literal[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]
#: MP3's lowest MPEG-1 rate (Hz); below it MPEG-2 and 2.5 carry at most :data:`MPEG2_MAX_KBPS`.
MPEG1_MIN_RATE = 32_000
MPEG2_MAX_KBPS = 160


class AudioSettings(BaseModel):
    """How speech is encoded for sinks (see :mod:`bot.audio`)."""

    model_config = ConfigDict(extra="forbid")

    normalize_loudness: bool = True
    loudness_target_lufs: float = Field(-16.0, ge=-40.0, le=-5.0)
    true_peak_dbtp: float = Field(-1.5, ge=-9.0, le=0.0)
    discord_bitrate_kbps: int = Field(64, ge=16, le=510)
    mp3_bitrate_kbps: int = Field(128, ge=128, le=320)
    mp3_channels: int = Field(1, ge=1, le=2)
    mp3_sample_rate: Mp3Rate | None = None
    ffmpeg_path: Path | None = None
    ffmpeg_timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _mp3_bitrate_fits_the_rate(self) -> Self:
        """Below 32 kHz, MP3 is MPEG-2 (or 2.5) Layer III, whose bitrates end at 160 kbit/s
        (ISO/IEC 13818-3, Table 2.4.2.3; LAME caps a higher one there without a word)."""
        rate = self.mp3_sample_rate
        if rate is not None and rate < MPEG1_MIN_RATE and self.mp3_bitrate_kbps > MPEG2_MAX_KBPS:
            raise ValueError(
                f"audio.mp3_sample_rate {rate} carries at most {MPEG2_MAX_KBPS} kbit/s (MPEG-2 "
                f"Layer III), not mp3_bitrate_kbps {self.mp3_bitrate_kbps}: choose a rate of "
                f"{MPEG1_MIN_RATE} Hz or more, or leave mp3_sample_rate out"
            )
        return self


class LimitSettings(BaseModel):
    """A client-side rate limit: calls started per minute and calls running at once."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: float | None = Field(
        None, gt=0, description="Calls started per window_s (despite the name, per window)"
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="Calls running at once (none: no limit but the provider's)"
    )
    window_s: float = Field(60.0, gt=0, le=86400, description="The provider's window, seconds")


class RateLimitSettings(BaseModel):
    """``rate_limits``: overrides of the providers' default limits, and retry behaviour."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, LimitSettings] = Field(
        default_factory=dict, description="Per provider name; replaces its default limit"
    )
    models: dict[str, LimitSettings] = Field(
        default_factory=dict, description='Per "provider/model": a bucket of its own'
    )
    backoff_base_s: float = Field(1.0, gt=0, le=60)
    backoff_cap_s: float = Field(
        60.0, gt=0, le=3600, description="Longest wait after a 429 that gave no hint, seconds"
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a 5xx, timeout or lost connection")


class CreditSettings(BaseModel):
    """``credits``: the credit circuit and per-call cost estimates."""

    model_config = ConfigDict(extra="forbid")

    reopen_after_s: float = Field(
        900.0, gt=0, description="Providers with no credit check: retry after this long"
    )
    check_interval_s: float = Field(
        60.0, gt=0, description="Least time between two credit checks of an empty provider"
    )
    costs: dict[str, float] = Field(
        default_factory=dict,
        description='USD per call, by "provider/model" or "provider"; overrides the defaults',
    )


class BudgetSettings(BaseModel):
    """``budgets``: daily spend caps in USD (UTC days). None: no cap."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, float] = Field(default_factory=dict)
    per_guild_usd: float | None = Field(None, ge=0)
    per_user_usd: float | None = Field(None, ge=0)
    guilds: dict[str, float] = Field(default_factory=dict, description="Per guild id overrides")
    users: dict[str, float] = Field(default_factory=dict, description="Per user overrides")


class CacheSettings(BaseModel):
    """``cache``: the audio cache (see :mod:`bot.cache`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_mb: float = Field(500.0, gt=0, description="Size cap in MiB; least recently used go first")
    dir: Path | None = Field(None, description="Default: <data_dir>/cache")
    memory_mb: float = Field(
        32.0,
        ge=0,
        description="MiB of the most recently used audio also kept in memory (0: none): a hit "
        "on it is answered without reading the index or the file",
    )


#: The URL schemes ``engine.url`` takes (redis-py's ``from_url``).
ENGINE_SCHEMES = ("redis", "rediss", "unix")


class EngineSettings(BaseModel):
    """``engine``: where the state that several Oyez processes share lives.

    No ``url``: embedded, in this process and its SQLite file (one process). A Redis or Valkey
    URL: every process given the same one shares the credit circuit and the budgets' spend.
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="redis://[:password@]host:6379/0, rediss://… (TLS) or "
        "unix:///run/redis.sock; unset or empty: embedded (one process)",
    )
    key_prefix: str = Field(
        "oyez:", min_length=1, max_length=64, description="Prefix of every key Oyez writes"
    )

    # A plain string, not a SecretStr: the secret-masking of logs would then hide every URL
    # that starts like it; bot.ops.engine registers only its password as a secret and shows it
    # masked (redis://:***@redis:6379/0).
    @field_validator("url")
    @classmethod
    def _engine_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        scheme = url.strip().partition("://")[0].lower()
        if scheme not in ENGINE_SCHEMES:
            raise ValueError(
                "not a Redis URL: it starts with redis://, rediss:// or unix:// "
                "(e.g. redis://redis:6379/0)"
            )
        return url.strip()


#: The roles of ``oyez run`` (README "Scaling out"), all of them by default.
ROLES: tuple[Role, ...] = ("gateway", "synth", "api", "coordinator")
Role = Literal["gateway", "synth", "api", "coordinator"]


class RunSettings(BaseModel):
    """``run``: which parts of Oyez this process runs (``oyez run --role`` overrides it)."""

    model_config = ConfigDict(extra="forbid")

    roles: Annotated[list[Role], NoDecode] = Field(
        default_factory=lambda: list(ROLES),
        description="gateway (Discord), synth, api (HTTP API, media, Wyoming), coordinator "
        "(schedules, Home Assistant events); a list or a comma-separated string "
        "(OYEZ_RUN__ROLES=gateway,api); all (the default): every one, as one process. "
        "Anything but all needs engine.url",
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, roles: Any) -> Any:
        return split_roles(roles)


def split_roles(roles: Any) -> Any:
    """``"gateway, api"`` (or the JSON ``'["gateway", "api"]'``) → ``["gateway", "api"]``;
    ``all`` → :data:`ROLES`; duplicates kept once. Raises ``ValueError`` naming an unknown
    role or an empty list; other values are left to pydantic."""
    if isinstance(roles, str) and roles.lstrip().startswith("["):
        try:  # the JSON list the README documents for list variables: '["gateway", "api"]'
            roles = json.loads(roles)
        except ValueError:
            raise ValueError(f"not a JSON list of roles: {roles[:60]!r}") from None
    if isinstance(roles, str):
        roles = roles.split(",")
    if not isinstance(roles, list | tuple):
        return roles
    names: list[Any] = []
    for role in roles:
        name = role.strip().lower() if isinstance(role, str) else role
        if name == "":
            continue
        if name == "all":
            names.extend(ROLES)
        elif name not in ROLES:
            raise ValueError(
                f"unknown role {str(role)[:40]!r}: choose from {', '.join(ROLES)} or all"
            )
        else:
            names.append(name)
    if not names:
        raise ValueError(f"no role given: choose from {', '.join(ROLES)} or all")
    return list(dict.fromkeys(names))


class SynthSettings(BaseModel):
    """``synth``: synthesis in worker processes (the ``synth`` role, README "Scaling out").

    A process without the synth role sends its cache misses, one job a sentence, to the workers
    of processes that run it (through ``engine.url``) and hears their audio back.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "local", "workers"] = Field(
        "auto",
        description="Where this process synthesizes: auto: here when it runs the synth role, "
        "else in the synth workers when one is alive (else here, with a warning); local: "
        "always here; workers: always in the workers (needs engine.url)",
    )
    concurrency: int = Field(
        2, ge=1, le=64, description="Jobs a synth process makes at once (its workers)"
    )
    claim_idle_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a job's worker may go silent before another takes the job over "
        "(a live worker renews its claim every third of it)",
    )
    timeout_s: float = Field(
        300.0,
        gt=0,
        description="Longest wait, seconds, for a worker's audio when the request has no "
        "expiry (then the request fails, naming why)",
    )
    onnx_threads: int | None = Field(
        None,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads of each Piper voice; unset: 1 in a process "
        "running the synth role without every other (one Piper per core: run one synth "
        "process per core), else onnxruntime's default (one per core); 0: that default",
    )


def onnx_threads(settings: Settings) -> int:
    """The intra-op threads a Piper voice's onnxruntime session gets in this process (0:
    onnxruntime's default, one per core); see :attr:`SynthSettings.onnx_threads`."""
    if settings.synth.onnx_threads is not None:
        return settings.synth.onnx_threads
    roles = set(settings.run.roles)
    return 1 if "synth" in roles and roles != set(ROLES) else 0


class NamedVoice(BaseModel):
    """A voice under a name of the user's choosing: ``voices: {grandma: {...}}``.

    ``--voice grandma`` then means this provider, model, voice and options (request options
    win over these).
    """

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="The provider (section name under providers) to speak")
    model: str | None = Field(None, description="Its model; none: the provider's default")
    voice: str | None = Field(None, description="Its voice id; none: the provider's default")
    options: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        description="Provider options sent with each request (e.g. exaggeration: 0.7)",
    )
    description: str | None = Field(
        None, description="Shown by oyez voices, /voices and Home Assistant's voice list"
    )


class HttpSettings(BaseModel):
    """``http``: Oyez's own HTTP server (media for speakers, the API, health and metrics)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("0.0.0.0", description="Address to listen on")  # noqa: S104 (speakers)
    port: int = Field(8080, ge=0, le=65535, description="0: any free port")
    public_url: AnyHttpUrl | None = Field(
        None,
        description="Base URL speakers can reach (a LAN address, never localhost); "
        "default http://127.0.0.1:<port>",
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token of the /api/v1 endpoints; unset: the API is off"
    )
    media_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="How long a media URL for speakers stays valid"
    )

    def base_url(self) -> str:
        """The public base URL without a trailing slash."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        return f"http://127.0.0.1:{self.port}"


class DiscordChannel(BaseModel):
    """A Discord voice channel as an announcement target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guild_id: int = Field(gt=0, description="The Discord server's id")
    channel_id: int = Field(gt=0, description="Its voice (or stage) channel's id")

    def __str__(self) -> str:
        return f"discord:{self.guild_id}/{self.channel_id}"


class QuietHours(BaseModel):
    """A daily span (in ``time_zone``) when only high-priority announcements are spoken.

    ``start`` after ``end`` spans midnight (22:00 to 07:00).
    """

    model_config = ConfigDict(extra="forbid")

    start: time = Field(description='When quiet hours begin, "HH:MM" in time_zone')
    end: time = Field(description='When they end, "HH:MM"; before start: the next day')

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class AnnounceSettings(BaseModel):
    """``announce``: announcements from Home Assistant, the HTTP API and schedules."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(
        300.0, gt=0, le=86400, description="Default ttl: older announcements are dropped"
    )
    duplicate_window_s: float = Field(
        30.0, ge=0, le=86400, description="The same message to the same target is spoken once"
    )
    quiet_hours: QuietHours | None = None
    chime_url: AnyHttpUrl | None = Field(
        None, description="Media played first when an announcement says chime: true"
    )
    chimes: dict[str, str] = Field(
        default_factory=dict,
        description="Named chimes (chime: <name>): an http(s) URL or a local audio file",
    )
    chime_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts an announcement may name a chime URL on (chime: <url>); none: only "
        "configured chimes play",
    )

    @field_validator("chimes")
    @classmethod
    def _chimes(cls, chimes: dict[str, str]) -> dict[str, str]:
        for name, source in chimes.items():
            if not name.strip() or not source.strip():
                raise ValueError("a chime needs a name and a URL or file path")
        return chimes

    @field_validator("chime_hosts")
    @classmethod
    def _chime_hosts(cls, hosts: list[str]) -> list[str]:
        cleaned = [host.strip().lower().strip("[]").rstrip(".") for host in hosts]
        for host in cleaned:
            if not host or any(c in host for c in "/@ ?#") or host.count(":") == 1:
                raise ValueError(
                    f"{host!r} is not a host name (like chimes.example.com; no scheme or port)"
                )
        return cleaned

    discord_channels: dict[str, DiscordChannel] = Field(
        default_factory=dict, description="Names usable as discord targets"
    )
    media_players: list[str] = Field(
        default_factory=list, description="Speakers used when an announcement names no target"
    )


#: Sections kept as plain mappings (validated by their provider or front end): pydantic cannot
#: tell that a key inside them takes a JSON value, so :class:`_EnvSource` decodes it.
_RAW_SECTIONS = ("providers", "discord", "homeassistant", "wyoming")


def _decode_json_values(value: Any) -> Any:
    """``value`` with every string inside it that is a JSON array or object decoded; any other
    string (``"1.3"``, a key, text that does not parse) is kept as it is."""
    if isinstance(value, dict):
        return {key: _decode_json_values(item) for key, item in value.items()}
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, list | dict) else value
    return value


class _EnvSource(EnvSettingsSource):
    """``OYEZ_*`` variables, where a variable inside a raw section takes JSON like a typed one:
    ``OYEZ_PROVIDERS__SEGMIND__TIMEOUT_S='{"chatterbox-turbo-tts": 6}'``."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for name in _RAW_SECTIONS:
            if name in data:
                data[name] = _decode_json_values(data[name])
        return data


class Settings(BaseSettings):
    """The effective configuration. Build it with :func:`load`."""

    model_config = SettingsConfigDict(
        env_prefix="OYEZ_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("data")
    default_provider: str = "piper"
    default_voice: str | None = None
    max_text_length: int = Field(1000, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line"
    )
    time_zone: str | None = Field(
        None, description="IANA zone for quiet hours and schedules; unset: the system's"
    )
    audio: AudioSettings = Field(default_factory=AudioSettings)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    voices: dict[str, NamedVoice] = Field(default_factory=dict)
    pronunciations: dict[
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)],
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)],
    ] = Field(
        default_factory=dict,
        description="Words said otherwise than written (whole words, any case): word: spoken as",
    )
    fallback: list[str] = Field(
        default_factory=lambda: ["piper"],
        description="Providers (or provider/model, or named voices) that speak instead",
    )
    patience_s: float = Field(
        20.0, ge=0, description="How long a request waits for a rate limit before falling back"
    )
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    credits: CreditSettings = Field(default_factory=CreditSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    discord: dict[str, Any] = Field(
        default_factory=dict, description="The Discord bot (integrations.discord.bot)"
    )
    homeassistant: dict[str, Any] = Field(
        default_factory=dict, description="Home Assistant (integrations.homeassistant)"
    )
    wyoming: dict[str, Any] = Field(
        default_factory=dict, description="The Wyoming TTS server (integrations.wyoming)"
    )
    http: HttpSettings = Field(default_factory=HttpSettings)
    announce: AnnounceSettings = Field(default_factory=AnnounceSettings)
    schedules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Scheduled alerts (bot.schedule.Schedule), loaded by name at start",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            known_zone(zone)
        return zone

    def zone(self) -> tzinfo:
        """``time_zone`` as a tzinfo; the system's local zone when unset."""
        if self.time_zone is not None:
            return ZoneInfo(self.time_zone)
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local

    @field_validator("voices")
    @classmethod
    def _casefold_names(cls, voices: dict[str, NamedVoice]) -> dict[str, NamedVoice]:
        return {name.casefold(): voice for name, voice in voices.items()}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - pydantic-settings hook; _EnvSource instead
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - pydantic-settings hook; no .env source
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - pydantic-settings hook; no secrets dir
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls)]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    def provider_section(self, name: str) -> dict[str, Any]:
        """The raw ``providers.<name>`` mapping (empty when not configured)."""
        return dict(self.providers.get(name, {}))


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem, naming the key; never echoes the value (it may be a secret)."""
    lines = validation_problems(error, "(top level)", unknown="unknown key")
    return f"invalid configuration in {where}:\n" + "\n".join(f"  {line}" for line in lines)


def _resolve_path(path: Path | None) -> Path | None:
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    from_env = os.environ.get("OYEZ_CONFIG")
    if from_env:
        env_path = Path(from_env)
        if not env_path.is_file():
            raise ConfigError(f"configuration file {env_path} (from OYEZ_CONFIG) does not exist")
        return env_path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def source_file(path: Path | None = None) -> Path | None:
    """The YAML file :func:`load` reads: ``path``, else ``$OYEZ_CONFIG``, else ``./oyez.yaml``
    when present; None when there is none. Raises :class:`ConfigError` when the file is missing,
    is not valid YAML or does not hold a mapping."""
    yaml_path = _resolve_path(path)
    if yaml_path is not None:
        try:
            content = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{yaml_path} is not valid YAML: {exc}") from None
        if content is not None and not isinstance(content, dict):
            raise ConfigError(
                f"{yaml_path} must hold a mapping of keys, not {type(content).__name__}"
            )
    return yaml_path


def from_sources(
    yaml_path: Path | None, settings_class: type[Settings] = Settings, **overrides: Any
) -> Settings:
    """``settings_class`` built from ``overrides``, the environment and ``yaml_path`` (from
    :func:`source_file`). Raises pydantic's ``ValidationError`` as it is: ``oyez check-config``
    walks its errors."""
    token = _yaml_file.set(yaml_path)
    try:
        return settings_class(**overrides)
    finally:
        _yaml_file.reset(token)


def load(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the effective settings.

    ``path`` is the YAML file (None: ``$OYEZ_CONFIG`` or ``./oyez.yaml`` when present);
    ``overrides`` win over everything (tests use them). Raises :class:`ConfigError` naming every
    problem: a missing file, YAML syntax, unknown keys, wrong types, out-of-range values.
    """
    yaml_path = source_file(path)
    where = f"{yaml_path} or the OYEZ_* environment" if yaml_path else "the environment"
    try:
        return from_sources(yaml_path, **overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
