"""``oyez run``: every configured front end around one speech pipeline.

One :class:`~bot.synthesis.pipeline.SpeechPipeline`, one :class:`~bot.announce.announcer.Announcer`
and one HTTP server (:mod:`bot.web.server`) are shared as :class:`~bot.frontend.Parts`. The
front ends of :data:`integrations.FRONT_ENDS` are built in its order: Discord when
``discord.token`` is set, Home Assistant when ``homeassistant.url`` and ``token`` are, the
Wyoming server when ``wyoming.uri`` is, the scheduler always (alone, it is enough when schedules
exist). They start in that order and stop
in reverse; one that ends with an error stops the service (logged, secrets never are).

``run.roles`` (``oyez run --role``) chooses the parts a process runs, so several processes
sharing one engine split the work: ``gateway`` the Discord bot, ``api`` the HTTP API
(announcements, requests), ``/media`` and the Wyoming server, ``coordinator`` the scheduler
(and ``/api/v1/schedules``); Home Assistant (its speakers, its events, claimed once across the
processes) runs in both (:data:`integrations.FRONT_END_ROLES`). Every process serves
``/healthz``, ``/readyz`` and ``/metrics`` on its HTTP port. Credit checks and cache eviction
are made by whichever process needs them (under the engine's shared circuit and cache).
``synth`` runs the synthesis workers (:mod:`bot.synthesis.workers`) when the engine is shared;
where a process's cache misses are made is ``synth.mode`` (:mod:`bot.synthesis.remote`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import cast

from bot.announce.announcer import Announcer
from bot.errors import ConfigError
from bot.frontend import FrontEnd, FrontEndFactory, Parts
from bot.ops.config import ROLES, Settings
from bot.ops.engine import Engine
from bot.providers.dispatch import Dispatcher
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.remote import RemoteSynthesis
from bot.synthesis.workers import SynthWorkers
from bot.web.health import add_health_routes
from bot.web.server import OyezServer
from integrations import FRONT_END_ROLES, FRONT_ENDS

__all__ = ["STOP_GRACE_S", "Service"]

log = logging.getLogger(__name__)

#: Seconds a front end's serving task gets to end once cancelled before its front end is stopped.
STOP_GRACE_S = 5.0


def _factory(target: str) -> FrontEndFactory:
    """The factory a ``"module:function"`` entry of :data:`integrations.FRONT_ENDS` names."""
    module_name, _, attr = target.partition(":")
    return cast(FrontEndFactory, getattr(importlib.import_module(module_name), attr))


class Service:
    """Builds the shared parts and the configured front ends, and serves them."""

    def __init__(
        self,
        settings: Settings,
        pipeline: SpeechPipeline | None = None,
        engine: Engine | None = None,
    ) -> None:
        """``engine`` (opened by the caller, who closes it after :meth:`serve`): where the
        shared state lives; None: embedded. Ignored for the parts a given ``pipeline`` has."""
        self.settings = settings
        self.engine = engine
        if pipeline is None and engine is not None:
            books = engine.books(settings.data_dir)
            dispatcher = Dispatcher(settings, books, engine.limiter_factory())
            pipeline = SpeechPipeline(settings, dispatcher=dispatcher)
            if not engine.embedded:
                pipeline.flights = engine.flights()
                pipeline.registry.jobs = engine.queued_jobs()
                pipeline.cache_factory = engine.audio_cache
        self.pipeline = pipeline or SpeechPipeline(settings)
        self.announcer = Announcer(settings, self.pipeline.prepare)
        self.roles = frozenset(settings.run.roles)
        api = "api" in self.roles
        media = None
        if engine is not None and not engine.embedded:  # else each part keeps its own
            self.announcer.board = engine.status_board()
            self.announcer.suppression.window = engine.duplicate_window()
            media = engine.media_store(settings)
        self.server = OyezServer(
            settings.http,
            settings.data_dir,
            self.announcer if api else None,
            media,
            serve_media=api,
        )
        self.front_ends: list[FrontEnd] = []
        self.workers = self._synthesis(engine)
        add_health_routes(self.server, self.front_ends, self.pipeline, settings.default_provider)

    def _synthesis(self, engine: Engine | None) -> SynthWorkers | None:
        """Send this process's cache misses to the synth workers when ``synth.mode`` says so,
        and the synth workers of this process (the synth role, a shared engine)."""
        queue = engine.synth_queue() if engine is not None else None
        if queue is None:
            return None
        mode = self.settings.synth.mode
        if mode == "workers" or (mode == "auto" and "synth" not in self.roles):
            self.pipeline.remote = RemoteSynthesis(queue, self.settings.synth)
        if "synth" not in self.roles:
            return None
        return SynthWorkers(self.pipeline, queue, self.settings.synth)

    @property
    def parts(self) -> Parts:
        """What each front end's factory gets."""
        return Parts(
            self.settings, self.pipeline, self.announcer, self.server, self.engine, self.roles
        )

    async def build(self) -> None:
        """Create the configured front ends (their modules imported now, not before).

        Raises :class:`ConfigError` when a front end's configuration is wrong, or when nothing
        would run: no front end but idle ones, and the HTTP API off; or, with only some roles,
        when ``engine.url`` is unset or a role has nothing to run.
        """
        self._check_roles()
        parts = self.parts
        if self.workers is not None:
            self.front_ends.append(self.workers)
        for name, target in FRONT_ENDS.items():
            if self.roles.isdisjoint(FRONT_END_ROLES[name]):
                continue
            front_end = _factory(target)(parts)
            if front_end is not None:
                self.front_ends.append(front_end)
        if self.roles != frozenset(ROLES):
            await self._check_partial()
        elif not self.server.api_enabled and await self._all_idle():
            for front_end in reversed(self.front_ends):
                await front_end.stop()
            self.front_ends.clear()
            raise ConfigError(
                "nothing to run: set OYEZ_DISCORD__TOKEN (Discord), OYEZ_HOMEASSISTANT__URL and "
                "OYEZ_HOMEASSISTANT__TOKEN (Home Assistant), or OYEZ_HTTP__API_TOKEN (the HTTP "
                "API), or add a schedule (schedules: in the configuration, or oyez schedule add)"
            )

    def _check_roles(self) -> None:
        roles = ", ".join(r for r in ROLES if r in self.roles)
        embedded = self.engine is None or self.engine.embedded
        if embedded and self.settings.synth.mode == "workers":
            raise ConfigError(
                "synth.mode workers sends synthesis to the synth processes through engine.url: "
                "set OYEZ_ENGINE__URL (redis://host:6379/0), or set OYEZ_SYNTH__MODE=auto"
            )
        if self.roles == frozenset(ROLES):
            return
        if embedded:
            raise ConfigError(
                f"oyez run with the roles {roles} runs only part of Oyez, and the processes "
                "running the other parts share their state through engine.url: set "
                "OYEZ_ENGINE__URL (redis://host:6379/0), or run every role (the default)"
            )

    async def _check_partial(self) -> None:
        """Each role asked for has something to run, else a :class:`ConfigError` naming it
        (what was built is stopped first)."""
        names = {f.name for f in self.front_ends}
        problem = None
        if "gateway" in self.roles and "discord" not in names:
            problem = "the gateway role runs the Discord bot: set OYEZ_DISCORD__TOKEN"
        elif "api" in self.roles and not self.server.api_enabled and "wyoming" not in names:
            problem = (
                "the api role serves the HTTP API or the Wyoming server: set "
                "OYEZ_HTTP__API_TOKEN or OYEZ_WYOMING__URI"
            )
        if problem is not None:
            for front_end in reversed(self.front_ends):
                await front_end.stop()
            self.front_ends.clear()
            raise ConfigError(problem)

    async def _all_idle(self) -> bool:
        for front_end in self.front_ends:
            if not await front_end.idle():
                return False
        return True

    async def serve(self) -> None:
        """Start the server and the front ends, and serve until cancelled. Raises what a front
        end raised when it failed to start or while serving, once everything is stopped."""
        started: list[FrontEnd] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.server.start()
            for front_end in self.front_ends:
                started.append(front_end)  # stopped below even if it fails half-started
                await front_end.start()
                tasks.append(asyncio.create_task(front_end.serve(), name=f"oyez-{front_end.name}"))
            if not tasks:
                await asyncio.Event().wait()  # the HTTP API alone
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self._shut_down(started, tasks)

    async def _shut_down(self, started: list[FrontEnd], tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the front ends' serving, stop them (in reverse), then the shared parts.

        A serving task that outlives its cancellation (Python 3.11's ``wait_for`` can lose a
        cancel that races its inner future, as discord.py's gateway connect does) is waited for
        :data:`STOP_GRACE_S`, then again after its front end was stopped (which ends it)."""
        for task in tasks:
            task.cancel()
        pending = {t for t in tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        await self.announcer.aclose()
        for front_end in reversed(started):
            try:
                await front_end.stop()
            except Exception:
                log.exception("stopping %s failed", front_end.name)
        for task in tasks:
            if task in pending:
                log.warning("%s kept serving after it was cancelled; stopped it", task.get_name())
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.stop()
        await self.pipeline.aclose()
