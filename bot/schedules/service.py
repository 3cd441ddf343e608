"""The scheduler as a front end of ``oyez run``, found through :data:`integrations.FRONT_ENDS`."""

from __future__ import annotations

from bot.frontend import Parts
from bot.schedules.api import schedule_routes
from bot.schedules.scheduler import Scheduler, configured_schedules
from bot.schedules.store import ScheduleBook

__all__ = ["scheduler_front_end"]


def scheduler_front_end(parts: Parts) -> Scheduler:
    """The scheduler of ``oyez run``: the configured schedules (synced into SQLite when it
    starts, after the server listens), pre-synthesis through the shared pipeline, and
    ``/api/v1/schedules`` on the shared HTTP server. Raises :class:`~bot.errors.ConfigError`
    for a wrong ``schedules:`` entry; touches no file."""
    settings = parts.settings
    schedules = configured_schedules(settings)
    book = ScheduleBook(settings.data_dir)  # opened on first use, in a worker thread
    claims = parts.engine.fire_claims() if parts.engine is not None else None
    scheduler = Scheduler(
        settings,
        parts.announcer,
        book,
        synthesize=parts.pipeline.speak,
        configured=schedules,
        claims=claims,
    )
    parts.server.add_routes(schedule_routes(parts.server, scheduler, parts.pipeline.prepare))
    return scheduler
