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
    book, zone = scheduler.book, scheduler.settings.zone

    async def listed(request: web.Request) -> web.StreamResponse:
        return web.json_response({"schedules": [s.as_json(zone()) for s in await book.all()]})

    async def one(request: web.Request) -> web.StreamResponse:
        found = await book.get(request.match_info["name"])
        if found is None:
            return json_error(404, "no such schedule")
        return web.json_response(found.as_json(zone()))

    async def create(request: web.Request) -> web.StreamResponse:
        data = await server.read_json(request)
        now = scheduler.now()
        try:
            schedule = Schedule.parse(data)
            check_new(schedule, scheduler.settings, now)
            if prepare is not None:
                await check_speakable(schedule, scheduler.settings, prepare, now)
            stored = await book.add(schedule, "http", now)
        except ScheduleExists as exc:
            return json_error(409, str(exc))
        except InvalidRequest as exc:
            return json_error(422, str(exc))
        scheduler.wake()
        return web.json_response(
            stored.as_json(zone()),
            status=201,
            headers={"Location": f"{API_PREFIX}/schedules/{schedule.name}"},
        )

    async def change(request: web.Request) -> web.StreamResponse:
        data = await server.read_json(request)
        if not isinstance(data, dict) or set(data) != {"enabled"}:
            return json_error(
                422, 'only {"enabled": true|false} can be changed: remove and add again'
            )
        if not isinstance(data["enabled"], bool):
            return json_error(422, "enabled: must be true or false")
        try:
            stored = await book.set_enabled(
                request.match_info["name"], data["enabled"], scheduler.now()
            )
        except UnknownSchedule:
            return json_error(404, "no such schedule")
        scheduler.wake()
        return web.json_response(stored.as_json(zone()))

    async def remove(request: web.Request) -> web.StreamResponse:
        try:
            await book.remove(request.match_info["name"])
        except UnknownSchedule:
            return json_error(404, "no such schedule")
        scheduler.wake()
        return web.Response(status=204)

    guard = server.authorized
    path = f"{API_PREFIX}/schedules"
    return [
        web.get(path, guard(listed), allow_head=False),
        web.post(path, guard(create)),
        web.get(f"{path}/{{name}}", guard(one), allow_head=False),
        web.patch(f"{path}/{{name}}", guard(change)),
        web.delete(f"{path}/{{name}}", guard(remove)),
    ]
