"""``discord`` in the configuration (``OYEZ_DISCORD__TOKEN``, ``..._READ_MESSAGES``…)."""

from __future__ import annotations

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, SecretStr, ValidationError

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

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordSettings:
        """The ``discord`` section of ``settings``; raises :class:`ConfigError` when invalid."""
        try:
            return cls.model_validate(settings.discord)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "discord")) from None
