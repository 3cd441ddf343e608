"""The scheduler as a front end of ``oyez run``, found through :data:`integrations.FRONT_ENDS`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bot.frontend import Parts
from bot.schedules.api import schedule_routes
from bot.schedules.scheduler import Scheduler, configured_schedules
from bot.schedules.store import ScheduleBook

__all__ = ["scheduler_front_end"]

log = logging.getLogger(__name__)


def scheduler_front_end(parts: Parts) -> Scheduler:
    """The scheduler of ``oyez run``: the configured schedules synced into SQLite, pre-synthesis
    through the shared pipeline, and ``/api/v1/schedules`` on the shared HTTP server. Raises
    :class:`~bot.errors.ConfigError` for a wrong ``schedules:`` entry."""
    settings = parts.settings
    schedules = configured_schedules(settings)
    book = ScheduleBook(settings.data_dir)
    now = datetime.now(UTC)
    for change in book.sync_config(schedules, now):
        log.info("schedules: from the configuration: %s", change)
    for schedule in schedules:
        if schedule.at is not None and schedule.at <= now:
            log.warning(
                "schedule %s: at %s is in the past: it will not fire",
                schedule.name,
                schedule.at.isoformat(),
            )
    claims = parts.engine.fire_claims() if parts.engine is not None else None
    scheduler = Scheduler(
        settings, parts.announcer, book, synthesize=parts.pipeline.speak, claims=claims
    )
    parts.server.add_routes(schedule_routes(parts.server, scheduler, parts.pipeline.prepare))
    return scheduler
