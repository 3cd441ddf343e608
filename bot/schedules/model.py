"""Scheduled spoken alerts: what a schedule is, when it fires, and what it says.

A :class:`Schedule` has a name, a five-field ``cron`` (``0 19 * * 2``: Tuesdays at 19:00) read in
its IANA ``time_zone`` or a one-shot ``at`` (ISO 8601 with a UTC offset), a ``message`` with the
:data:`PLACEHOLDERS` of its fire time, and the targets, voice and priority of the
:class:`~bot.announce.announcer.Announcement` it becomes. Across a daylight-saving change it
fires as cron does: a skipped wall time (02:30 on 2026-03-29, Europe/Paris) at the end of the
gap (03:00 CEST), a repeated one (02:30 on 2026-10-25) once, at its first occurrence.
"""

from __future__ import annotations

import re
import string
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.announce.model import Announcement, as_list, chime_source, parse_fields
from bot.errors import ConfigError, InvalidRequest
from bot.ops.config import DiscordChannel, Settings, known_zone
from bot.schedules import PLACEHOLDERS
from bot.speech import Priority, RequestSource, SpeechRequest

__all__ = [
    "PLACEHOLDERS",
    "Schedule",
    "check_message",
    "check_new",
    "check_speakable",
    "check_targets",
    "render",
    "target_kinds",
]

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
_NAME_MESSAGE = {
    ("name", "string_pattern_mismatch"): (
        "must be 1 to 40 letters, digits, . _ or -, starting with a letter or digit"
    )
}
_CHANNEL = re.compile(r"^\d+/\d+$")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
#: Wall times walked through at most to find one fire time (a per-minute cron crossing a
#: fall-back hour skips 60); beyond this the expression is treated as never firing.
_MAX_STEPS = 10_000


def check_message(message: str) -> set[str]:
    """The placeholders ``message`` uses; raises ``ValueError`` naming the first bad one.

    Only :data:`PLACEHOLDERS`, ``{{`` and ``}}`` (literal braces): no attribute access
    (``{time.x}``), indexing (``{date[0]}``), conversion (``{time!r}``) or format spec.
    """
    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(message))
    except ValueError:
        raise ValueError("has an unmatched { or }: write {{ or }} for a literal brace") from None
    known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        shown = (
            "{"
            + field
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if field not in PLACEHOLDERS:
            if not field:
                problem = "an empty placeholder {}"
            elif any(c in field for c in ".["):
                problem = f"placeholder {shown} uses attribute access or indexing"
            else:
                problem = f"unknown placeholder {shown}"
            raise ValueError(f"{problem}: only {known} are allowed ({{{{ }}}} for braces)")
        if conversion or spec:
            raise ValueError(f"placeholder {shown} takes no conversion or format spec")
        used.add(field)
    return used


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(f"unknown placeholder {{{key}}}")


def render(message: str, moment: datetime) -> str:
    """``message`` with its placeholders filled from ``moment`` (aware, in the schedule's zone).

    Raises ``ValueError`` for a placeholder :func:`check_message` refuses.
    """
    check_message(message)  # format_map alone would allow {time.__class__}
    values = _Values(
        time=f"{moment:%H:%M}",
        date=f"{_MONTHS[moment.month - 1]} {moment.day}, {moment.year}",
        weekday=_WEEKDAYS[moment.weekday()],
    )
    return message.format_map(values)


def _check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} must have 5 fields ({_CRON_FIELDS}), it has {len(fields)}"
        )
    normalized = " ".join(fields)
    try:
        croniter(normalized, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{expression!r} is not a valid cron expression ({_CRON_FIELDS}): {exc}"
        ) from None
    return normalized


def _exists(local: datetime) -> bool:
    """Whether the aware wall time ``local`` exists (is not in a spring-forward gap)."""
    round_trip = local.astimezone(UTC).astimezone(local.tzinfo)
    return round_trip.replace(tzinfo=None) == local.replace(tzinfo=None)


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """The aware instant of a naive wall time: its first occurrence when it happens twice, the
    end of the gap when it does not exist."""
    local = wall.replace(tzinfo=zone, fold=0)
    probe = wall
    for _ in range(24 * 60):  # gaps are an hour, rarely two; never a day
        if _exists(local):
            return local
        probe += timedelta(minutes=1)
        local = probe.replace(second=0, microsecond=0, tzinfo=zone, fold=0)
    return local


class Schedule(BaseModel):
    """One scheduled alert, as given in ``schedules:``, ``oyez schedule add``, ``POST
    /api/v1/schedules`` and ``/schedule add``.

    Exactly one of ``cron`` (five fields, read in ``time_zone``) and ``at`` (a one-shot,
    ISO 8601 with a UTC offset). ``time_zone`` None means Oyez's ``time_zone``. ``media_player``,
    ``satellite`` and ``discord`` take what an announcement takes; with none,
    ``announce.media_players``.
    An alert missed by more than ``grace_s`` seconds (Oyez was not running) is skipped, or
    spoken once late with ``catch_up``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=_NAME)] = Field(
        description="1 to 40 letters, digits, . _ or -, starting with a letter or digit"
    )
    cron: str | None = Field(
        None, description='Repeating: five cron fields, e.g. "0 19 * * 2" (Tuesdays 19:00)'
    )
    at: datetime | None = Field(
        None, description="One-shot: ISO 8601 with a UTC offset, e.g. 2026-03-03T19:00:00+01:00"
    )
    time_zone: str | None = Field(None, description="IANA zone of cron; default: time_zone")
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="What to say; placeholders {time}, {date}, {weekday}"
    )
    media_player: list[str] = Field(default_factory=list, description="Speakers (entity ids)")
    satellite: list[str] = Field(
        default_factory=list, description="Voice satellites (assist_satellite entity ids)"
    )
    discord: list[DiscordChannel | str] = Field(
        default_factory=list,
        description="Voice channels: GUILD_ID/CHANNEL_ID, {guild_id, channel_id} or a name",
    )
    voice: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = Field(
        None, description="Voice id or name; default: the provider's"
    )
    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = Field(
        None, description="TTS provider; default: default_provider"
    )
    priority: Priority = Priority.NORMAL
    speed: float | None = Field(
        None, ge=0.5, le=2.0, description="Speaking rate, 0.5 to 2 (1 normal); default: the voice's"
    )
    volume: float | None = Field(
        None, ge=0, le=1, description="Speakers' volume, 0 to 1, for the alert (restored after)"
    )
    chime: bool | Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        False, description="Played first on speakers: true, a name of announce.chimes, or a URL"
    )
    enabled: bool = Field(True, description="false: paused")
    catch_up: bool = Field(
        False, description="Speak an alert missed while Oyez was down once, late, at start"
    )
    grace_s: float = Field(
        60.0, ge=0, le=86400, description="Lateness still spoken; beyond it, a miss"
    )

    @field_validator("media_player", "satellite", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("discord", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        """``GUILD_ID/CHANNEL_ID`` is a channel too (the CLI's and YAML's short form)."""
        items = as_list(value)
        if not isinstance(items, list):
            return items  # not a list of targets: pydantic names the field
        return [
            dict(zip(("guild_id", "channel_id"), item.split("/"), strict=True))
            if isinstance(item, str) and _CHANNEL.match(item)
            else item
            for item in items
        ]

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else _check_cron(value)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-03-03T19:00:00+01:00")
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            known_zone(value)
        return value

    @field_validator("message")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        check_message(value)
        return value

    @field_validator("media_player")
    @classmethod
    def _entity_ids(cls, value: list[str]) -> list[str]:
        try:
            return Announcement(message="-", media_player=value).media_player
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None

    @field_validator("satellite")
    @classmethod
    def _satellite_ids(cls, value: list[str]) -> list[str]:
        try:
            return Announcement(message="-", satellite=value).satellite
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.at is None):
            raise ValueError("give either cron (a repeating alert) or at (a one-shot), not both")
        return self

    @classmethod
    def parse(cls, data: Any) -> Schedule:
        """Validate schedule data from an edge; raises :class:`InvalidRequest` naming every
        wrong field."""
        return parse_fields(cls, data, "schedule", _NAME_MESSAGE)

    # -- time ----------------------------------------------------------------------------------

    def zone(self, default: tzinfo) -> tzinfo:
        """The zone fire times are read in: ``time_zone``, else ``default``."""
        return known_zone(self.time_zone) if self.time_zone else default

    def next_fire(self, after: datetime, default_zone: tzinfo) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), in the schedule's zone; None
        when there is none (a one-shot already past, a cron that never matches)."""
        if self.at is not None:
            return self.at if self.at > after else None
        assert self.cron is not None
        zone = self.zone(default_zone)
        wall = after.astimezone(zone).replace(tzinfo=None)
        walker = croniter(self.cron, wall)
        for _ in range(_MAX_STEPS):
            try:
                candidate = _instant(walker.get_next(datetime), zone)
            except CroniterBadDateError:  # e.g. "0 0 30 2 *": February 30 never comes
                return None
            if candidate > after:
                return candidate
        return None

    def latest_fire(
        self, after: datetime, until: datetime, default_zone: tzinfo
    ) -> tuple[datetime | None, int | None]:
        """The latest fire time in ``(after, until]`` and how many fire times that span holds
        (None when too many to count: only the last day's are walked through)."""
        first = self.next_fire(after, default_zone)
        if first is None or first > until:
            return None, 0
        start, counted = after, True
        if until - first > timedelta(days=1):
            start, counted = until - timedelta(days=1), False
        latest, count, moment = first, 0, start
        while (found := self.next_fire(moment, default_zone)) is not None and found <= until:
            latest, count, moment = found, count + 1, found
        return latest, count if counted else None

    def local(self, moment: datetime, default_zone: tzinfo) -> datetime:
        """``moment`` in the schedule's zone."""
        return moment.astimezone(self.zone(default_zone))

    # -- speech --------------------------------------------------------------------------------

    def announcement(self, moment: datetime, default_zone: tzinfo) -> Announcement:
        """What to announce for the fire time ``moment``; its id is ``schedule:NAME:UNIX``."""
        return Announcement(
            message=render(self.message, self.local(moment, default_zone)),
            media_player=self.media_player,
            satellite=self.satellite,
            discord=self.discord,
            voice=self.voice,
            provider=self.provider,
            priority=self.priority,
            speed=self.speed,
            volume=self.volume,
            chime=self.chime,
            id=f"schedule:{self.name}:{int(moment.timestamp())}",
        )


def target_kinds(schedule: Schedule) -> set[str]:
    """The sink kinds an alert of ``schedule`` goes to (``media_player``, ``satellite``,
    ``discord``)."""
    kinds = {"discord"} if schedule.discord else set()
    if schedule.satellite:
        kinds.add("satellite")
    if schedule.media_player or not (schedule.discord or schedule.satellite):
        kinds.add("media_player")  # no target at all: announce.media_players
    return kinds


def check_new(schedule: Schedule, settings: Settings, now: datetime) -> None:
    """What only a new schedule must pass: a fire time to come, and targets that exist.

    Raises :class:`InvalidRequest` naming what is wrong: a one-shot time in the past, a cron
    that never fires, a discord target name not in ``announce.discord_channels``, no target
    when ``announce.media_players`` is empty.
    """
    zone = settings.zone()
    if schedule.at is not None and schedule.at <= now:
        raise InvalidRequest(
            f"invalid schedule: at: {schedule.at.isoformat()} is in the past "
            f"(now is {now.astimezone(schedule.zone(zone)).isoformat(timespec='seconds')})"
        )
    if schedule.cron is not None and schedule.next_fire(now, zone) is None:
        raise InvalidRequest(f"invalid schedule: cron: {schedule.cron!r} never fires")
    check_targets(schedule, settings)


def check_targets(schedule: Schedule, settings: Settings) -> None:
    """Raise :class:`InvalidRequest` for a discord target name not in
    ``announce.discord_channels``, or no target when ``announce.media_players`` is empty."""
    named = settings.announce.discord_channels
    for target in schedule.discord:
        if isinstance(target, str) and target not in named:
            known = ", ".join(sorted(named)) or "none are configured"
            raise InvalidRequest(
                f"invalid schedule: discord: unknown target {target!r} "
                f"(give GUILD_ID/CHANNEL_ID, or a name from announce.discord_channels: {known})"
            )
    given = schedule.discord or schedule.media_player or schedule.satellite
    if not given and not settings.announce.media_players:
        raise InvalidRequest(
            "invalid schedule: no target: give media_player, satellite and/or discord "
            "(or set announce.media_players)"
        )


async def check_speakable(
    schedule: Schedule,
    settings: Settings,
    prepare: Callable[[SpeechRequest], Awaitable[object]],
    now: datetime,
) -> None:
    """Check that the next alert of ``schedule`` can be spoken: its text (placeholders filled),
    voice and provider, with the pipeline's ``prepare`` (nothing is synthesized). Raises
    :class:`InvalidRequest` with the pipeline's reason."""
    zone = settings.zone()
    moment = schedule.next_fire(now, zone) or now
    try:
        await prepare(
            SpeechRequest.build(
                text=render(schedule.message, schedule.local(moment, zone)),
                voice=schedule.voice,
                provider=schedule.provider,
                source=RequestSource.SCHEDULE,
                speed=schedule.speed,
            )
        )
    except (InvalidRequest, ConfigError) as exc:
        raise InvalidRequest(f"invalid schedule: {exc}") from None
    try:
        chime_source(schedule.chime, settings.announce)
    except InvalidRequest as exc:  # its reason names the announcement's field: the same here
        raise InvalidRequest(str(exc).replace("announcement", "schedule", 1)) from None
