"""``discord`` in the configuration (``OYEZ_DISCORD__TOKEN``, ``..._READ_MESSAGES``…)."""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.ops.config import Settings, format_validation_error

__all__ = ["DiscordSettings"]


class DiscordSettings(BaseModel):
    """``discord`` in the configuration (``OYEZ_DISCORD__TOKEN``…)."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = Field(None, description="The bot token; the bot runs when set")
    api_base_url: AnyUrl = AnyUrl("https://discord.com/api/v10")
    gateway_url: AnyUrl | None = Field(None, description="Default: the one Discord announces")
    sync_guilds: list[int] = Field(
        default_factory=list, description="Sync commands to these guilds only (fast iteration)"
    )
    idle_timeout_s: float = Field(300.0, gt=0, description="Leave voice after this long idle")
    alone_timeout_s: float = Field(
        30.0, ge=0, description="Leave voice this long after the last human left; 0: stay"
    )
    prefetch: int = Field(2, ge=0, le=5, description="Utterances synthesized ahead")
    read_messages: bool = Field(
        False,
        description="Read a channel aloud (/setup); needs the privileged message content intent",
    )
    split_sentences: bool = Field(
        True, description="Speak long texts sentence by sentence: the first plays at once"
    )
    sentence_lookahead: int = Field(
        2, ge=0, le=8, description="Sentences synthesized ahead of the one playing"
    )
    stream_start_s: float = Field(
        0.2, ge=0, le=5, description="Seconds of a streaming voice encoded before it plays"
    )
    join_cooldown_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="/join at most once in this many seconds per server (0: no limit)",
    )
    skip_cooldown_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="/skip at most once in this many seconds per member (0: no limit): one "
        "member cannot skip everyone's words",
    )

    shard_count: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Gateway shards in all, over every process (Discord requires one per "
        "2,500 servers); unset: one connection without sharding",
    )
    shard_ids: list[int] | None = Field(
        None,
        description="The shards this process runs (0 to shard_count - 1; a list or "
        "OYEZ_DISCORD__SHARD_IDS=0,1); unset: all of them",
    )

    relay_takeover_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description="Seconds a relayed Discord delivery, read by a gateway process that "
        "stopped claiming it (it died), waits before a process of its shard takes it over",
    )

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, ids: Any) -> Any:
        if isinstance(ids, str):
            try:
                if ids.lstrip().startswith("["):  # the JSON list form: '[0, 1]'
                    return [int(part) for part in json.loads(ids)]
                return [int(part) for part in ids.split(",") if part.strip()]
            except ValueError:
                raise ValueError(
                    "not a list of shard numbers: give them separated by commas (0,1)"
                ) from None
        return ids

    @model_validator(mode="after")
    def _shards_in_range(self) -> Self:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("shard_ids needs shard_count (the number of shards in all)")
        wrong = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if wrong:
            raise ValueError(
                f"shard_ids {wrong} out of range: 0 to {self.shard_count - 1} (shard_count - 1)"
            )
        if not self.shard_ids:
            raise ValueError("shard_ids is empty: name at least one shard, or unset it")
        self.shard_ids = sorted(set(self.shard_ids))
        return self

    @property
    def sharded(self) -> bool:
        """Whether the bot connects as shards (``shard_count`` set)."""
        return self.shard_count is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordSettings:
        """The ``discord`` section of ``settings``; raises :class:`ConfigError` when invalid."""
        try:
            return cls.model_validate(settings.discord)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "discord")) from None
