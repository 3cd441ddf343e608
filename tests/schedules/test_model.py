"""Schedules on their own: validation, placeholders, and fire times across daylight-saving
changes (pure functions of the wall clock, no loop)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.errors import InvalidRequest
from bot.ops import config
from bot.schedules.model import Schedule, check_new, check_speakable, render, target_kinds
from bot.speech import SpeechRequest

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def cron(expression: str, zone: str = "Europe/Paris", **fields: object) -> Schedule:
    return Schedule.parse(
        {"name": "s", "cron": expression, "time_zone": zone, "message": "hi", **fields}
    )


def fires(schedule: Schedule, start: datetime, until: datetime) -> list[datetime]:
    found, moment = [], start
    while (moment := schedule.next_fire(moment, UTC)) is not None and moment <= until:  # type: ignore[assignment]
        found.append(moment)
    return found


def local(*args: int, zone: ZoneInfo = PARIS, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[arg-type,misc]


def test_spring_forward_a_skipped_time_fires_once_right_after_the_gap() -> None:
    # 2026-03-29: Paris clocks go from 02:00 CET straight to 03:00 CEST; 02:30 does not exist
    found = fires(cron("30 2 * * *"), local(2026, 3, 27, 12), local(2026, 3, 31, 12))
    assert found == [
        local(2026, 3, 28, 2, 30),
        local(2026, 3, 29, 3, 0),  # the gap's end, once
        local(2026, 3, 30, 2, 30),
        local(2026, 3, 31, 2, 30),
    ]
    assert [f.utcoffset() for f in found] == [timedelta(hours=h) for h in (1, 2, 2, 2)]
    # every fire time in the skipped hour collapses into that one instant
    quarter = fires(cron("*/15 2 29 3 *"), local(2026, 3, 29, 0), local(2026, 3, 29, 6))
    assert quarter == [local(2026, 3, 29, 3, 0)]


def test_fall_back_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25: Paris clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice
    found = fires(cron("30 2 * * *"), local(2026, 10, 24, 12), local(2026, 10, 26, 12))
    assert found == [local(2026, 10, 25, 2, 30), local(2026, 10, 26, 2, 30)]
    assert found[0].astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # CEST
    # 01:30, before the change, is an ordinary time: once
    early = fires(cron("30 1 * * *"), local(2026, 10, 24, 12), local(2026, 10, 26, 0))
    assert early == [local(2026, 10, 25, 1, 30)]
    # New York falls back at 02:00 (2026-11-01): 01:30 happens twice there, spoken once
    york = cron("30 1 * * *", "America/New_York")
    found = fires(
        york, local(2026, 10, 31, 12, zone=NEW_YORK), local(2026, 11, 2, 12, zone=NEW_YORK)
    )
    assert [f.astimezone(UTC) for f in found] == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, the first
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),  # 01:30 EST, the next day
    ]


def test_half_hourly_cron_across_the_repeated_hour_never_goes_back_in_time() -> None:
    found = fires(cron("*/30 * * * *"), local(2026, 10, 25, 1, 0), local(2026, 10, 25, 4, 0))
    utc = [f.astimezone(UTC) for f in found]
    assert utc == sorted(set(utc))
    assert [f.strftime("%H:%M%z") for f in found] == [
        "01:30+0200", "02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100", "04:00+0100",
    ]  # fmt: skip


def test_weekly_cron_in_the_schedules_zone_not_the_default() -> None:
    bins = cron("0 19 * * 2", "Europe/London")  # Tuesdays 19:00 London time
    after = datetime(2026, 3, 1, tzinfo=UTC)
    assert bins.next_fire(after, PARIS) == datetime(2026, 3, 3, 19, 0, tzinfo=UTC)
    unzoned = cron("0 19 * * 2", None)  # type: ignore[arg-type]
    assert unzoned.next_fire(after, PARIS) == datetime(2026, 3, 3, 18, 0, tzinfo=UTC)


def test_one_shot_fires_once() -> None:
    at = datetime(2026, 3, 3, 19, 0, tzinfo=PARIS)
    oven = Schedule.parse({"name": "oven", "at": at.isoformat(), "message": "The oven"})
    assert oven.next_fire(at - timedelta(seconds=1), UTC) == at
    assert oven.next_fire(at, UTC) is None


def test_latest_fire_counts_what_was_missed() -> None:
    hourly = cron("0 * * * *")
    start = local(2026, 3, 1, 0, 0)
    latest, count = hourly.latest_fire(start, local(2026, 3, 1, 5, 30), UTC)
    assert (latest, count) == (local(2026, 3, 1, 5, 0), 5)
    latest, count = hourly.latest_fire(start, local(2026, 3, 9, 5, 30), UTC)
    assert (latest, count) == (local(2026, 3, 9, 5, 0), None)  # too many to count
    assert hourly.latest_fire(start, local(2026, 3, 1, 0, 30), UTC) == (None, 0)


def test_placeholders_are_filled_from_the_fire_time() -> None:
    moment = datetime(2026, 3, 3, 19, 0, tzinfo=PARIS)
    assert (
        render("It is {time} on {weekday}, {date}. {{literal}}", moment)
        == "It is 19:00 on Tuesday, March 3, 2026. {literal}"
    )
    alert = cron("0 19 * * 2", message="Bins out, {weekday} {time}")
    announcement = alert.announcement(moment.astimezone(UTC), UTC)
    assert announcement.message == "Bins out, Tuesday 19:00"  # in the schedule's zone
    assert announcement.id == f"schedule:s:{int(moment.timestamp())}"


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("{time.__class__}", "attribute access or indexing"),
        ("{date[0]}", "attribute access or indexing"),
        ("{hour}", "unknown placeholder {hour}"),
        ("{}", "empty placeholder"),
        ("{0}", "unknown placeholder {0}"),
        ("{time!r}", "no conversion or format spec"),
        ("{time:>9}", "no conversion or format spec"),
        ("Price {5", "unmatched { or }"),
    ],
)
def test_bad_placeholders_are_refused_by_name(message: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match="message: ") as caught:
        cron("* * * * *", message=message)
    assert problem in str(caught.value)
    with pytest.raises(ValueError, match=r"placeholder|unmatched"):
        render(message, datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a valid cron expression"),
        ({"cron": "* * * * * *"}, "must have 5 fields"),
        ({"cron": "0 19 * * 2", "time_zone": "Europe/Atlantis"}, "unknown time zone"),
        ({"at": "2026-03-03T19:00:00"}, "at: must carry a UTC offset"),
        ({"cron": "* * * * *", "at": "2026-03-03T19:00:00Z"}, "either cron"),
        ({}, "either cron"),
        ({"cron": "* * * * *", "name": "no spaces"}, "name: must be 1 to 40"),
        ({"cron": "* * * * *", "media_player": "kitchen"}, "not a media player entity id"),
        ({"cron": "* * * * *", "discord": [{"guild_id": 0, "channel_id": 1}]}, "discord"),
        ({"cron": "* * * * *", "colour": "red"}, "colour: unknown field"),
        ({"cron": "* * * * *", "speed": 0.1}, "speed: Input should be greater than or equal"),
        ({"cron": "* * * * *", "volume": 2}, "volume: Input should be less than or equal to 1"),
    ],
)
def test_invalid_schedules_name_what_is_wrong(fields: dict[str, object], problem: str) -> None:
    data = {"name": "s", "message": "hi", **fields}
    with pytest.raises(InvalidRequest, match="invalid schedule") as caught:
        Schedule.parse(data)
    assert problem in str(caught.value)


def test_discord_short_form_is_a_channel() -> None:
    schedule = cron("* * * * *", discord=["123/456", "raid"])
    first, named = schedule.discord
    assert (getattr(first, "guild_id", None), getattr(first, "channel_id", None)) == (123, 456)
    assert named == "raid"


def test_new_schedules_must_fire_in_the_future_on_known_targets() -> None:
    settings = config.load(
        announce={"discord_channels": {"raid": {"guild_id": 1, "channel_id": 2}}}
    )
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    past = Schedule.parse(
        {"name": "s", "at": "2026-03-03T11:59:00+00:00", "message": "hi", "discord": "raid"}
    )
    with pytest.raises(InvalidRequest, match=r"at: 2026-03-03T11:59:00\+00:00 is in the past"):
        check_new(past, settings, now)
    never = cron("0 0 30 2 *", discord="raid")  # February 30
    with pytest.raises(InvalidRequest, match="never fires"):
        check_new(never, settings, now)
    unknown = cron("0 19 * * 2", discord="guild-raid")
    with pytest.raises(InvalidRequest, match=r"unknown target 'guild-raid'.*raid"):
        check_new(unknown, settings, now)
    nowhere = cron("0 19 * * 2")
    with pytest.raises(InvalidRequest, match="no target"):
        check_new(nowhere, settings, now)
    check_new(cron("0 19 * * 2", discord="raid"), settings, now)  # fine


def test_a_satellite_is_a_target_of_its_own() -> None:
    settings = config.load()
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    schedule = cron("0 19 * * 2", satellite="assist_satellite.kitchen")
    check_new(schedule, settings, now)  # a target, though announce.media_players is empty
    assert target_kinds(schedule) == {"satellite"}
    both = cron("0 19 * * 2", satellite="assist_satellite.kitchen", media_player="media_player.x")
    assert target_kinds(both) == {"satellite", "media_player"}
    alert = schedule.announcement(now, UTC)
    assert alert.satellite == ["assist_satellite.kitchen"]
    with pytest.raises(InvalidRequest, match="is not a voice satellite entity id"):
        cron("0 19 * * 2", satellite="media_player.kitchen")


def test_an_alert_carries_the_schedules_speed_volume_and_chime() -> None:
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    schedule = cron("0 19 * * 2", speed=0.8, volume=0.4, chime="doorbell")
    alert = schedule.announcement(now, UTC)
    assert (alert.speed, alert.volume, alert.chime) == (0.8, 0.4, "doorbell")
    plain = cron("0 19 * * 2").announcement(now, UTC)
    assert (plain.speed, plain.volume, plain.chime) == (None, None, False)
    stored = Schedule.model_validate_json(schedule.model_dump_json())
    assert stored == schedule  # what the schedule table keeps


async def test_an_unknown_chime_is_refused_when_the_schedule_is_made() -> None:
    settings = config.load(announce={"chimes": {"doorbell": "/sounds/ding.mp3"}})
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    prepared: list[SpeechRequest] = []

    async def prepare(request: SpeechRequest) -> None:
        prepared.append(request)

    await check_speakable(cron("0 19 * * 2", chime="doorbell", speed=1.5), settings, prepare, now)
    assert prepared[-1].speed == 1.5  # checked at the speed it will be spoken at
    with pytest.raises(InvalidRequest, match=r"invalid schedule: chime: .*'gong'.*doorbell"):
        await check_speakable(cron("0 19 * * 2", chime="gong"), settings, prepare, now)
