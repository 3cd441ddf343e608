"""``homeassistant`` in the configuration (``OYEZ_HOMEASSISTANT__URL``, ``..._TOKEN``…)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bot.errors import ConfigError
from bot.ops.config import Settings, format_validation_error

__all__ = ["HomeAssistantSettings"]

EventType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]


class HomeAssistantSettings(BaseModel):
    """How Oyez reaches Home Assistant.

    ``url`` is Home Assistant's base URL (``http://homeassistant.local:8123``); the websocket
    is ``/api/websocket`` under it (``ws://`` or ``wss://``). ``token`` is a long-lived access
    token of an administrator (firing and subscribing to custom events needs one). TLS
    certificates are always verified: there is no switch to turn that off (a self-signed
    certificate goes into the system trust store, or ``SSL_CERT_FILE``).
    """

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl | None = Field(None, description="Home Assistant's base URL")
    token: SecretStr | None = Field(None, description="A long-lived access token (admin)")
    event_type: EventType = Field("oyez_announce", description="The event Oyez listens to")
    reconnect_min_s: float = Field(
        1.0, gt=0, le=60, description="First wait before reconnecting; doubles per failure"
    )
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between tries")
    ping_interval_s: float = Field(
        30.0, gt=0, le=600, description="Keepalive: a ping after this long; no pong → reconnect"
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Longest wait for an answer to one command"
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.url is None) != (self.token is None):
            missing = "token" if self.token is None else "url"
            raise ValueError(f"url and token go together: set homeassistant.{missing} too")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be less than reconnect_min_s")
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None and self.token is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> HomeAssistantSettings:
        """Validate ``settings.homeassistant``; raises :class:`ConfigError` naming each problem."""
        try:
            return cls.model_validate(settings.homeassistant)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "homeassistant")) from None

    def base_url(self) -> str:
        assert self.url is not None
        return str(self.url).rstrip("/")

    def websocket_url(self) -> str:
        """``ws(s)://host:port/…/api/websocket`` for :attr:`url`."""
        base = self.base_url()
        scheme, rest = base.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/websocket"
