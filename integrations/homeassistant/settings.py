"""``homeassistant`` in the configuration (``OYEZ_HOMEASSISTANT__URL``, ``..._TOKEN``…), and
``homeassistant.speakers.<entity_id>`` for speakers that need handling of their own."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self

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

from bot.errors import ConfigError
from bot.ops.config import Settings, format_validation_error

__all__ = ["HomeAssistantSettings", "SpeakerMode", "SpeakerSettings"]

EventType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
_OBJECT_ID = re.compile(r"^[a-z0-9_]+$")


class SpeakerMode(StrEnum):
    """How a speaker gets an announcement.

    ``auto``: ``announce`` when its ``supported_features`` has ``MEDIA_ANNOUNCE`` (1048576 in
    Home Assistant 2025.4's ``MediaPlayerEntityFeature``), else ``resume``. ``announce``:
    ``play_media`` with ``announce: true``, the player pauses or ducks what it plays and resumes
    it itself. ``resume``: Oyez takes a snapshot (state, media, position, volume), plays the
    announcement, then plays what was playing again from where it was.
    """

    AUTO = "auto"
    ANNOUNCE = "announce"
    RESUME = "resume"


class SpeakerSettings(BaseModel):
    """``homeassistant.speakers.<entity_id>``: one speaker that needs handling of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: SpeakerMode = Field(
        SpeakerMode.AUTO,
        description="auto: announce: true where the speaker supports announcements "
        "(MEDIA_ANNOUNCE), else snapshot, play and resume; announce: always announce: true "
        "(force announce); resume: always snapshot and resume (force resume)",
    )
    restore_delay_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Extra wait after the announcement has finished, before the volume and "
        "what was playing are restored, seconds",
    )
    set_volume: bool = Field(
        True,
        description="Set an announcement's volume with volume_set and restore it after. The "
        "volume always goes in play_media's extra.volume too (0-100), which Sonos uses for "
        "announcements; false for a Sonos, whose volume_set changes only its music",
    )
    content_length: bool = Field(
        False,
        description="The speaker needs a Content-Length (it cannot play an MP3 that is served "
        "while it is still being made, chunked): it is given the URL once the whole file is "
        "made",
    )


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
    speakers: dict[str, SpeakerSettings] = Field(
        default_factory=dict,
        description="Per speaker (an entity id such as media_player.kitchen, or just kitchen): "
        "mode, restore_delay_s, set_volume, content_length",
    )

    @field_validator("speakers", mode="before")
    @classmethod
    def _entity_ids(cls, value: Any) -> Any:
        """Keys as full entity ids (``kitchen`` is ``media_player.kitchen``, for environment
        variables, which cannot hold a dot); anything else names the key."""
        if not isinstance(value, dict):
            return value
        speakers: dict[str, Any] = {}
        for key, item in value.items():
            entity = str(key).strip().lower()
            entity = entity if entity.startswith("media_player.") else f"media_player.{entity}"
            if not _OBJECT_ID.match(entity.removeprefix("media_player.")):
                raise ValueError(
                    f"{str(key)[:60]!r} is not a media player entity id (like media_player.kitchen)"
                )
            if entity in speakers:
                raise ValueError(f"{entity} is given twice")
            speakers[entity] = item
        return speakers

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

    def speaker(self, entity_id: str) -> SpeakerSettings:
        """The settings of ``entity_id`` (the defaults when it has none)."""
        return self.speakers.get(entity_id) or _DEFAULT_SPEAKER

    def base_url(self) -> str:
        assert self.url is not None
        return str(self.url).rstrip("/")

    def websocket_url(self) -> str:
        """``ws(s)://host:port/…/api/websocket`` for :attr:`url`."""
        base = self.base_url()
        scheme, rest = base.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/websocket"


_DEFAULT_SPEAKER = SpeakerSettings()
