"""Wyoming around the tests: ``oyez run`` with its Wyoming server, Home Assistant's Wyoming
integration added through its own config flow, and a small recording satellite.

- :func:`running_wyoming` runs a :class:`~bot.service.Service` in a task until its Wyoming
  server listens.
- :func:`add_wyoming` goes through Home Assistant's config flow over REST (``POST
  /api/config/config_entries/flow`` with ``handler: wyoming``, then host and port, as
  Settings → Devices & services → Add integration → Wyoming Protocol does) and returns the
  entry id; :func:`remove_entry` deletes it again (the Home Assistant is shared by the session).
- :class:`RecordingSatellite` is a Wyoming satellite (``describe`` answers with a ``satellite``
  info, so Home Assistant makes an ``assist_satellite`` entity): it answers pings, records the
  audio Home Assistant streams to it (an announcement) and says ``played`` after each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, Satellite
from wyoming.ping import Ping, Pong
from wyoming.satellite import RunSatellite
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.snd import Played

from bot.ops.config import Settings
from bot.service import Service
from integrations.wyoming.service import WyomingFrontEnd
from tests.support.asr import SAMPLE_RATE, Transcriber
from tests.support.homeassistant import HomeAssistant, free_port
from tests.support.serving import served

__all__ = [
    "Recording",
    "RecordingSatellite",
    "add_wyoming",
    "heard",
    "remove_entry",
    "running_wyoming",
]


def heard(transcriber: Transcriber, rate: int, pcm: bytes) -> str:
    """What the recogniser hears in PCM s16le mono at ``rate`` Hz (Wyoming's audio chunks)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    at = np.arange(0, len(samples), rate / SAMPLE_RATE)
    return transcriber.transcribe_samples(np.interp(at, np.arange(len(samples)), samples))


@contextlib.asynccontextmanager
async def running_wyoming(settings: Settings) -> AsyncIterator[Service]:
    """``oyez run`` in a task until its Wyoming server listens."""
    service = Service(settings)
    await service.build()
    async with served(service, WyomingFrontEnd):
        yield service


async def _rest(ha: HomeAssistant, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {ha.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{ha.url}{path}", json=body, headers=headers) as reply,
    ):
        answer = await reply.json(content_type=None)
        assert reply.status == 200, (reply.status, answer)
        return answer


async def add_wyoming(ha: HomeAssistant, port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The Wyoming integration for ``host:port``, added through its config flow; returns the
    created entry (``entry_id``, ``title``…). Fails when the flow shows an error instead."""
    flow = await _rest(ha, "POST", "/api/config/config_entries/flow", {"handler": "wyoming"})
    assert flow["type"] == "form" and flow["step_id"] == "user", flow
    done = await _rest(
        ha,
        "POST",
        f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"host": host, "port": port},
    )
    assert done["type"] == "create_entry", done
    return dict(done["result"])


async def remove_entry(ha: HomeAssistant, entry_id: str) -> None:
    await _rest(ha, "DELETE", f"/api/config/config_entries/entry/{entry_id}")


@dataclass
class Recording:
    """One stream of audio Home Assistant sent: its format and PCM."""

    rate: int
    width: int
    channels: int
    audio: bytearray = field(default_factory=bytearray)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / (self.rate * self.width * self.channels)


class _SatelliteHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        satellite: RecordingSatellite,
    ) -> None:
        super().__init__(reader, writer)
        self.satellite = satellite
        self._current: Recording | None = None

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.satellite.info().event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif RunSatellite.is_type(event.type):
            self.satellite.running.set()
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._current = Recording(start.rate, start.width, start.channels)
        elif AudioChunk.is_type(event.type) and self._current is not None:
            self._current.audio += AudioChunk.from_event(event).audio
        elif AudioStop.is_type(event.type) and self._current is not None:
            self.satellite.recordings.append(self._current)
            if self.satellite.real_time:  # as a speaker does: played once it has all been heard
                await asyncio.sleep(self._current.duration_s)
            self._current = None
            await self.write_event(Played().event())
            self.satellite.played.set()
        return True


class RecordingSatellite:
    """A Wyoming satellite on 127.0.0.1 (an async context manager); ``recordings`` holds what
    it was sent, ``running`` is set once Home Assistant has told it to run. ``real_time``:
    ``played`` comes after the audio's duration (else as soon as the audio ends)."""

    def __init__(self, name: str = "Oyez test satellite", *, real_time: bool = False) -> None:
        self.name = name
        self.real_time = real_time
        self.port = free_port()
        self.recordings: list[Recording] = []
        self.running = asyncio.Event()
        self.played = asyncio.Event()
        self._server = AsyncTcpServer("127.0.0.1", self.port)

    def info(self) -> Info:
        return Info(
            satellite=Satellite(
                name=self.name,
                description="A satellite that records what it is sent",
                attribution=Attribution(name="Oyez tests", url=""),
                installed=True,
                version="1.0",
            )
        )

    async def __aenter__(self) -> Self:
        await self._server.start(lambda r, w: _SatelliteHandler(r, w, self))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._server.stop()
