"""``oyez run``: every configured front end around one speech pipeline.

One :class:`~bot.pipeline.SpeechPipeline`, one :class:`~bot.announce.Announcer` and one HTTP
server (:mod:`bot.server`) are shared; the Discord bot starts when ``discord.token`` is set,
Home Assistant when ``homeassistant.url`` and ``homeassistant.token`` are; the scheduler
(:mod:`bot.scheduler`) always, and it alone is enough to run when schedules exist. Each front
end is a :class:`FrontEnd`: started in order, stopped in reverse, and a front end that ends
with an error stops the service (the error is logged, secrets never are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.announce.announcer import Announcer
from bot.errors import ConfigError
from bot.ops.config import Settings
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.health import add_health_routes
from bot.web.server import OyezServer

__all__ = ["FrontEnd", "Service"]

log = logging.getLogger(__name__)


class FrontEnd(Protocol):
    """A part of ``oyez run``: ``start`` returns once it is up (or raises); ``run`` serves until
    cancelled; ``stop`` releases what it holds. ``name`` is for logs; ``ready`` for /readyz."""

    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> tuple[bool, str]: ...


class Service:
    """Builds the shared parts and the configured front ends.

    Raises :class:`ConfigError` from :meth:`build` when nothing is configured to run or a front
    end's configuration is wrong.
    """

    def __init__(self, settings: Settings, pipeline: SpeechPipeline | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline or SpeechPipeline(settings)
        self.announcer = Announcer(settings, self.pipeline.prepare)
        self.server = OyezServer(settings.http, settings.data_dir, self.announcer)
        self.front_ends: list[FrontEnd] = []
        add_health_routes(self)

    def build(self) -> None:
        """Create the configured front ends (import their integrations lazily)."""
        from bot.schedules.scheduler import scheduler_front_end
        from integrations.discord.service import discord_front_end
        from integrations.homeassistant.service import homeassistant_front_end

        for make in (discord_front_end, homeassistant_front_end):
            front_end = make(self)
            if front_end is not None:
                self.front_ends.append(front_end)
        scheduler = scheduler_front_end(self)  # after the sinks its alerts go through
        if not self.front_ends and not self.server.api_enabled and not scheduler.book.count():
            scheduler.book.close()
            raise ConfigError(
                "nothing to run: set OYEZ_DISCORD__TOKEN (Discord), OYEZ_HOMEASSISTANT__URL and "
                "OYEZ_HOMEASSISTANT__TOKEN (Home Assistant), or OYEZ_HTTP__API_TOKEN (the HTTP "
                "API), or add a schedule (schedules: in the configuration, or oyez schedule add)"
            )
        self.front_ends.append(scheduler)

    async def run(self) -> None:
        """Start everything and serve until cancelled or a front end fails."""
        started: list[FrontEnd] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.server.start()
            for front_end in self.front_ends:
                started.append(front_end)  # stopped below even if it fails half-started
                await front_end.start()
                tasks.append(asyncio.create_task(front_end.run(), name=f"oyez-{front_end.name}"))
            if not tasks:
                await asyncio.Event().wait()  # the HTTP API alone
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.announcer.aclose()
            for front_end in reversed(started):
                try:
                    await front_end.stop()
                except Exception:
                    log.exception("stopping %s failed", front_end.name)
            await self.server.stop()
            await self.pipeline.aclose()
