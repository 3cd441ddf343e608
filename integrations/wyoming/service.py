"""The Wyoming TTS server as a front end of ``oyez run`` (``wyoming.uri`` set).

It lists the voices first (``describe`` is answered from that list, renewed every
``wyoming.voices_refresh_s``), then listens, and with ``wyoming.zeroconf`` announces itself as
``_wyoming._tcp.local.``, the service type Home Assistant's Wyoming integration discovers
(its ``manifest.json``). Requests go through the shared pipeline with ``source="wyoming"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from urllib.parse import urlsplit

from wyoming.server import AsyncServer
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from bot.frontend import Parts
from bot.synthesis.pipeline import SpeechPipeline
from integrations.wyoming.handler import OyezEventHandler, WyomingSpeaker
from integrations.wyoming.settings import WyomingSettings
from integrations.wyoming.voices import VoiceCatalogue

__all__ = ["SERVICE_TYPE", "WyomingFrontEnd", "wyoming_front_end"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."


def lan_address() -> str:
    """This machine's address on the network mDNS uses (the interface a multicast packet
    would leave from; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))
        return str(probe.getsockname()[0])


class WyomingFrontEnd:
    """Serves Wyoming on ``settings.uri`` for as long as ``oyez run`` runs."""

    name = "wyoming"

    def __init__(self, settings: WyomingSettings, pipeline: SpeechPipeline) -> None:
        self.settings = settings
        self.catalogue = VoiceCatalogue(pipeline, settings.default_language)
        self.speaker = WyomingSpeaker(
            pipeline, self.catalogue, stream_pieces=settings.stream_within_sentence
        )
        self._preparing: asyncio.Task[None] | None = None
        self._server: AsyncServer | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._service: AsyncServiceInfo | None = None

    async def idle(self) -> bool:
        """Never: a configured Wyoming server always has something to serve."""
        return False

    async def start(self) -> None:
        """List the voices, listen, announce. Raises ``OSError`` when the address is taken."""
        await self.catalogue.refresh()
        server = AsyncServer.from_uri(self.settings.uri)
        await server.start(lambda reader, writer: OyezEventHandler(reader, writer, self.speaker))
        self._server = server
        log.info("wyoming: serving on %s", self.settings.uri)
        if self.settings.stream_within_sentence:
            self._preparing = asyncio.create_task(
                self.speaker.prepare_streaming(), name="oyez-wyoming-streaming"
            )
        if self.settings.zeroconf:
            await self._announce()

    async def _announce(self) -> None:
        port = self.settings.tcp_port
        assert port is not None
        listening = urlsplit(self.settings.uri).hostname or ""
        specific = listening not in ("", "0.0.0.0", "::")  # noqa: S104 - compared, not bound
        host = self.settings.zeroconf_host or (listening if specific else lan_address())
        name = self.settings.zeroconf_name
        self._service = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(host)],
            port=port,
            server=f"{name}.local.",
        )
        self._zeroconf = AsyncZeroconf(interfaces=[host], ip_version=IPVersion.V4Only)
        await self._zeroconf.async_register_service(self._service)
        log.info("wyoming: announced as %s on %s:%d", self._service.name, host, port)

    async def serve(self) -> None:
        """Renew the voice list until cancelled; a failed renewal keeps the last list."""
        while True:
            await asyncio.sleep(self.settings.voices_refresh_s)
            try:
                await self.catalogue.refresh()
            except Exception:  # the server must not stop over a voice list
                log.exception("wyoming: renewing the voice list failed; the last one stays")

    async def stop(self) -> None:
        if self._preparing is not None:
            self._preparing.cancel()
            with contextlib.suppress(BaseException):
                await self._preparing
            self._preparing = None
        if self._zeroconf is not None:
            if self._service is not None:
                with contextlib.suppress(Exception):
                    await self._zeroconf.async_unregister_service(self._service)
            await self._zeroconf.async_close()
            self._zeroconf = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def ready(self) -> tuple[bool, str]:
        if self._server is None:
            return False, "the Wyoming server is not listening"
        streaming = self.speaker.streaming_voice
        within = f"; {streaming} streams within a sentence" if streaming else ""
        return True, f"serving Wyoming on {self.settings.uri}{within}"


def wyoming_front_end(parts: Parts) -> WyomingFrontEnd | None:
    """The Wyoming server when ``wyoming.uri`` is set. Raises
    :class:`~bot.errors.ConfigError` for a wrong ``wyoming`` section."""
    settings = WyomingSettings.from_settings(parts.settings)
    if not settings.enabled:
        return None
    return WyomingFrontEnd(settings, parts.pipeline)
