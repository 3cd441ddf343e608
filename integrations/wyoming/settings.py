"""``wyoming`` in the configuration (``OYEZ_WYOMING__URI``, ``OYEZ_WYOMING__ZEROCONF``…)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ConfigError
from bot.ops.config import Settings, format_validation_error

__all__ = ["WyomingSettings"]


class WyomingSettings(BaseModel):
    """Where Oyez serves the Wyoming protocol, and how it shows its voices.

    ``uri`` is ``tcp://HOST:PORT`` (10200 is the port Wyoming services use) or
    ``unix:///path/to/socket``; empty: no Wyoming server. ``zeroconf`` announces it as
    ``_wyoming._tcp.local.`` (tcp only) so Home Assistant finds it without being told.
    """

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        "", description="tcp://HOST:PORT (e.g. tcp://0.0.0.0:10200) or unix://PATH; empty: off"
    )
    zeroconf: bool = Field(False, description="Announce the server as _wyoming._tcp.local.")
    zeroconf_name: str = Field(
        "oyez", min_length=1, max_length=63, description="The instance name zeroconf announces"
    )
    zeroconf_host: str | None = Field(
        None,
        description="The address zeroconf announces; default: the uri's host, or this "
        "machine's LAN address when it listens on all",
    )
    voices_refresh_s: float = Field(
        600.0, gt=0, le=86400, description="How often the voice list describe answers is renewed"
    )
    default_language: str = Field(
        "en", min_length=2, description="Language of voices whose provider does not name one"
    )
    stream_within_sentence: bool = Field(
        True,
        description="Send the first sentence of a longer text in pieces as Piper's vocoder "
        "makes them: its first audio in about half the time. Piper's model is split once (into "
        "~/.cache/oyez/piper) and the halves take ~70 MiB more.",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        uri = uri.strip()
        if not uri:
            return uri
        parts = urlsplit(uri)
        if parts.scheme == "unix" and parts.path:
            return uri
        if parts.scheme != "tcp":
            raise ValueError(f"{uri!r} is not tcp://HOST:PORT or unix://PATH")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"{uri!r} needs a host and a port (tcp://0.0.0.0:10200)")
        return uri

    @property
    def enabled(self) -> bool:
        return bool(self.uri)

    @property
    def tcp_port(self) -> int | None:
        """The port of a ``tcp://`` uri (None for a Unix socket)."""
        parts = urlsplit(self.uri)
        return parts.port if parts.scheme == "tcp" else None

    @classmethod
    def from_settings(cls, settings: Settings) -> WyomingSettings:
        """Validate ``settings.wyoming``; raises :class:`ConfigError` naming each problem."""
        try:
            wyoming = cls.model_validate(settings.wyoming)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "wyoming")) from None
        if wyoming.zeroconf and wyoming.enabled and wyoming.tcp_port is None:
            raise ConfigError(
                "wyoming.zeroconf needs a tcp:// uri (zeroconf cannot announce a socket)"
            )
        return wyoming
