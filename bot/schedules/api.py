"""``/api/v1/schedules``: schedules over HTTP, behind the API token (see :mod:`bot.web.server`).

``GET`` lists them (``{"schedules": [...]}``, each as :meth:`StoredSchedule.as_json
<bot.schedules.store.StoredSchedule.as_json>`); ``POST`` a :class:`~bot.schedules.model.Schedule`
→ 201 with ``Location``, 422 with the reason (bad cron or zone, a past time, a bad target or
voice), 409 when the name is taken; ``GET``/``DELETE /{name}`` → 200/204 or 404; ``PATCH
/{name}`` with only ``{"enabled": false|true}`` pauses or resumes → 200, 404 or 422.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bot.errors import InvalidRequest
from bot.schedules.model import Schedule, check_new, check_speakable
from bot.schedules.store import ScheduleExists, UnknownSchedule
from bot.speech import SpeechRequest
from bot.web.server import API_PREFIX, OyezServer, json_error

if TYPE_CHECKING:
    from bot.schedules.scheduler import Scheduler

__all__ = ["schedule_routes"]


def schedule_routes(
    server: OyezServer,
    scheduler: Scheduler,
    prepare: Callable[[SpeechRequest], Awaitable[object]] | None = None,
) -> list[web.RouteDef]:
    """The routes, each behind ``server``'s token; ``prepare`` (the pipeline's) checks a new
    schedule's voice and provider."""
    handlers = _ScheduleHandlers(server, scheduler, prepare)
    guard = server.authorized
    path = f"{API_PREFIX}/schedules"
    return [
        web.get(path, guard(handlers.listed), allow_head=False),
        web.post(path, guard(handlers.create)),
        web.get(f"{path}/{{name}}", guard(handlers.one), allow_head=False),
        web.patch(f"{path}/{{name}}", guard(handlers.change)),
        web.delete(f"{path}/{{name}}", guard(handlers.remove)),
    ]


class _ScheduleHandlers:
    """One aiohttp handler per route, sharing the scheduler and its book."""

    def __init__(
        self,
        server: OyezServer,
        scheduler: Scheduler,
        prepare: Callable[[SpeechRequest], Awaitable[object]] | None,
    ) -> None:
        self.server = server
        self.scheduler = scheduler
        self.prepare = prepare
        self.book, self.zone = scheduler.book, scheduler.settings.zone

    async def listed(self, request: web.Request) -> web.StreamResponse:  # noqa: ARG002 - an aiohttp handler
        return web.json_response(
            {"schedules": [s.as_json(self.zone()) for s in await self.book.all()]}
        )

    async def one(self, request: web.Request) -> web.StreamResponse:
        found = await self.book.get(request.match_info["name"])
        if found is None:
            return json_error(404, "no such schedule")
        return web.json_response(found.as_json(self.zone()))

    async def create(self, request: web.Request) -> web.StreamResponse:
        data = await self.server.read_json(request)
        scheduler = self.scheduler
        now = scheduler.now()
        try:
            schedule = Schedule.parse(data)
            check_new(schedule, scheduler.settings, now)
            if self.prepare is not None:
                await check_speakable(schedule, scheduler.settings, self.prepare, now)
            stored = await self.book.add(schedule, "http", now)
        except ScheduleExists as exc:
            return json_error(409, str(exc))
        except InvalidRequest as exc:
            return json_error(422, str(exc))
        scheduler.wake()
        return web.json_response(
            stored.as_json(self.zone()),
            status=201,
            headers={"Location": f"{API_PREFIX}/schedules/{schedule.name}"},
        )

    async def change(self, request: web.Request) -> web.StreamResponse:
        data = await self.server.read_json(request)
        if not isinstance(data, dict) or set(data) != {"enabled"}:
            return json_error(
                422, 'only {"enabled": true|false} can be changed: remove and add again'
            )
        if not isinstance(data["enabled"], bool):
            return json_error(422, "enabled: must be true or false")
        try:
            stored = await self.book.set_enabled(
                request.match_info["name"], data["enabled"], self.scheduler.now()
            )
        except UnknownSchedule:
            return json_error(404, "no such schedule")
        self.scheduler.wake()
        return web.json_response(stored.as_json(self.zone()))

    async def remove(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.book.remove(request.match_info["name"])
        except UnknownSchedule:
            return json_error(404, "no such schedule")
        self.scheduler.wake()
        return web.Response(status=204)
