"""The announcement core: validation with reasons, ttl, duplicates, quiet hours (a fake clock),
targets, and how sink results become the final state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.announce.announcer import Announcer
from bot.announce.model import AnnouncementState, AnnouncementStatus
from bot.errors import RequestExpired, UnknownVoice
from bot.ops import config
from bot.ops.config import Settings
from bot.speech import (
    OutputProfile,
    Priority,
    RequestSource,
    SpeechRequest,
)
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from tests.support.clock import NOON, FakeClock
from tests.support.sinks import DiscordRecordingSink, RecordingSink

HTTP = RequestSource.HTTP


def make(
    tmp_path: Path, clock: FakeClock | None = None, **overrides: Any
) -> tuple[Announcer, RecordingSink, list[AnnouncementStatus]]:
    settings: Settings = config.load(data_dir=tmp_path / "data", **overrides)
    announcer = Announcer(settings, clock=clock or FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    reported: list[AnnouncementStatus] = []

    async def listener(status: AnnouncementStatus) -> None:
        reported.append(status)

    announcer.add_listener(listener)
    return announcer, sink, reported


def at(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"media_player": "media_player.x"}, "message: required"),
        (
            {"message": "   ", "media_player": "media_player.x"},
            "message: String should have at least 1",
        ),
        ({"message": "hi", "colour": "red"}, "colour: unknown field"),
        ({"message": "hi", "media_player": "kitchen"}, "'kitchen' is not a media player entity id"),
        ({"message": "hi", "volume": 1.5}, "volume: Input should be less than or equal to 1"),
        ({"message": "hi", "ttl": 0}, "ttl: Input should be greater than 0"),
        ({"message": "hi", "speed": 3}, "speed: Input should be less than or equal to 2"),
        ({"message": "hi", "priority": "urgent"}, "priority: Input should be 'low', 'normal' or"),
        ({"message": "hi", "discord": {"guild_id": 1}}, "discord.DiscordChannel.channel_id"),
        ({"message": "hi", "id": "no spaces allowed"}, "id: must be 1 to 64 letters"),
        ({"message": "hi", "chime": "not a url"}, "chime"),
        (["message", "hi"], "expected a mapping of fields, got list"),
    ],
)
async def test_invalid_data_fails_with_a_reason_and_is_not_spoken(
    tmp_path: Path, data: Any, expected: str
) -> None:
    announcer, sink, reported = make(tmp_path)
    status = await announcer.announce(data, HTTP)
    assert status.state is AnnouncementState.FAILED
    assert status.code == "invalid"
    assert status.reason is not None
    assert status.reason.startswith("invalid announcement: ")
    assert expected in status.reason
    assert sink.delivered == []
    assert reported == [status]
    assert status.done.is_set()


async def test_a_valid_caller_id_is_kept_even_when_the_rest_is_invalid(tmp_path: Path) -> None:
    announcer, _, _ = make(tmp_path)
    status = await announcer.announce({"id": "door-1", "volume": 9}, HTTP)
    assert status.id == "door-1"
    assert announcer.status("door-1") is status
    assert status.as_json()["request_id"] == "door-1"


# -- delivery and results ------------------------------------------------------------------------


async def test_delivered_once_per_kind_with_the_request_built_from_the_data(tmp_path: Path) -> None:
    announcer, sink, reported = make(tmp_path)
    clock = announcer.clock
    status = await announcer.announce(
        {
            "message": "Dinner is ready.",
            "media_player": ["media_player.a", "media_player.b"],
            "voice": "alan",
            "priority": "high",
            "ttl": 60,
            "speed": 1.25,
            "id": "r1",
        },
        RequestSource.HOMEASSISTANT,
        requester="user-1",
    )
    assert status.state is AnnouncementState.DONE
    assert status.code is None
    ((targets, request),) = sink.delivered
    assert targets == ["media_player.a", "media_player.b"]
    assert request.id == "r1"
    assert request.text == "Dinner is ready."
    assert request.voice == "alan"
    assert request.priority is Priority.HIGH
    assert request.output is OutputProfile.MP3
    assert request.source is RequestSource.HOMEASSISTANT
    assert request.requester == "user-1"
    assert request.speed == 1.25
    assert request.expires_at == datetime.fromtimestamp(clock(), UTC) + timedelta(seconds=60)
    assert (status.provider, status.voice, status.duration_s) == (
        "piper",
        "en_US-joe-medium",
        1.5,
    )
    shape = status.as_json()
    assert shape["state"] == "done"
    assert [t["target"] for t in shape["targets"]] == ["media_player.a", "media_player.b"]
    assert reported == [status]


async def test_configured_speakers_are_the_default_target(tmp_path: Path) -> None:
    announcer, sink, _ = make(tmp_path, announce={"media_players": ["media_player.hall"]})
    status = await announcer.announce({"message": "hi"}, HTTP)
    assert status.state is AnnouncementState.DONE
    assert sink.delivered[0][0] == ["media_player.hall"]


async def test_no_target_and_unknown_names_and_missing_sinks_are_invalid(tmp_path: Path) -> None:
    announcer, sink, _ = make(
        tmp_path, announce={"discord_channels": {"hall": {"guild_id": 1, "channel_id": 2}}}
    )
    none = await announcer.announce({"message": "hi"}, HTTP)
    assert none.code == "invalid"
    assert "no target" in (none.reason or "")
    unknown = await announcer.announce({"message": "hi", "discord": "attic"}, HTTP)
    assert unknown.code == "invalid"
    assert "unknown discord target 'attic'" in (unknown.reason or "")
    assert "hall" in (unknown.reason or "")
    no_bot = await announcer.announce({"message": "hi", "discord": "hall"}, HTTP)
    assert no_bot.code == "invalid"
    assert "the Discord bot is not running" in (no_bot.reason or "")
    assert sink.delivered == []
    no_ha = await announcer.announce({"message": "hi", "satellite": "assist_satellite.k"}, HTTP)
    assert no_ha.code == "invalid"
    assert "cannot announce to satellite targets: Home Assistant" in (no_ha.reason or "")

    discord = DiscordRecordingSink()
    announcer.add_sink(discord)
    named = await announcer.announce({"message": "hi", "discord": "hall"}, HTTP)
    assert named.state is AnnouncementState.DONE
    assert discord.delivered[0][0] == ["discord:1/2"]
    assert discord.delivered[0][1].output is OutputProfile.OGG_OPUS


async def test_one_failing_target_makes_it_partial_and_all_failing_failed(tmp_path: Path) -> None:
    announcer, sink, reported = make(tmp_path)
    sink.fail["media_player.kitchen"] = "Home Assistant refused play_media: no (x)"
    partial = await announcer.announce(
        {"message": "one", "media_player": ["media_player.kitchen", "media_player.hall"]}, HTTP
    )
    assert partial.state is AnnouncementState.PARTIAL
    assert partial.code == "failed"
    assert partial.reason == "media_player.kitchen: Home Assistant refused play_media: no (x)"
    assert [t.ok for t in partial.targets] == [False, True]
    failed = await announcer.announce(
        {"message": "two", "media_player": "media_player.kitchen"}, HTTP
    )
    assert failed.state is AnnouncementState.FAILED
    assert failed.code == "failed"
    sink.crash = RuntimeError("the sink broke")
    crashed = await announcer.announce({"message": "three", "media_player": "media_player.a"}, HTTP)
    assert crashed.state is AnnouncementState.FAILED
    assert crashed.targets[0].error == "the sink broke"
    assert [s.state for s in reported] == [
        AnnouncementState.PARTIAL,
        AnnouncementState.FAILED,
        AnnouncementState.FAILED,
    ]


async def test_prepare_refusing_the_voice_fails_it_before_any_sink(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data")

    async def prepare(request: SpeechRequest) -> None:
        raise UnknownVoice(request.voice or "", ["alan", "joe"])

    announcer = Announcer(settings, prepare, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    status = await announcer.announce(
        {"message": "hi", "media_player": "media_player.a", "voice": "nobody"}, HTTP
    )
    assert status.code == "invalid"
    assert "unknown voice 'nobody'" in (status.reason or "")
    assert sink.delivered == []


async def test_each_sink_gets_its_request_as_the_pipeline_prepared_it_once(
    tmp_path: Path,
) -> None:
    settings = config.load(data_dir=tmp_path / "data", pronunciations={"Oyez": "oh yay"})
    pipeline = SpeechPipeline(settings)
    checked: list[SpeechRequest] = []

    async def prepare(request: SpeechRequest) -> PreparedRequest:
        checked.append(request)
        return await pipeline.prepare(request)

    announcer = Announcer(settings, prepare)  # the real clock: the pipeline checks expiry by it
    speakers, discord = RecordingSink(), DiscordRecordingSink()
    announcer.add_sink(speakers)
    announcer.add_sink(discord)
    channel = {"guild_id": 1, "channel_id": 2}
    status = await announcer.announce(
        {"message": "Oyez calls.", "media_player": "media_player.a", "discord": channel}, HTTP
    )
    assert status.state is AnnouncementState.DONE
    assert len(checked) == 1  # once for every sink
    for sink, profile in ((speakers, OutputProfile.MP3), (discord, OutputProfile.OGG_OPUS)):
        ((_, request),) = sink.delivered
        (prepared,) = sink.prepared
        assert prepared is not None
        assert prepared.request is request  # the sink's own request: its own output profile
        assert request.output is profile
        assert prepared.text == "oh yay calls."
        assert (prepared.voice.provider, prepared.voice.id) == ("piper", "en_US-joe-medium")
    await pipeline.aclose()
    await announcer.aclose()


async def test_expiring_while_being_checked_is_expired_not_invalid(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data")

    async def prepare(request: SpeechRequest) -> None:  # the ttl ran out during the check
        raise RequestExpired(request.id, 0.0, "before synthesis")

    announcer = Announcer(settings, prepare, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    status = await announcer.announce(
        {"message": "hi", "media_player": "media_player.a", "ttl": 0.001}, HTTP
    )
    assert status.state is AnnouncementState.EXPIRED
    assert status.code == "expired"
    assert sink.delivered == []


# -- ttl -----------------------------------------------------------------------------------------


async def test_stale_announcements_expire_unspoken(tmp_path: Path) -> None:
    clock = FakeClock(NOON)
    announcer, sink, _ = make(tmp_path, clock, announce={"ttl_s": 300})
    data = {"message": "hi", "media_player": "media_player.a"}
    old = await announcer.announce(data, HTTP, created_at=at(clock) - timedelta(seconds=301))
    assert old.state is AnnouncementState.EXPIRED
    assert old.code == "expired"
    assert "older than its ttl of 300 s" in (old.reason or "")
    own_ttl = await announcer.announce(
        {**data, "ttl": 10}, HTTP, created_at=at(clock) - timedelta(seconds=11)
    )
    assert own_ttl.state is AnnouncementState.EXPIRED
    assert sink.delivered == []
    fresh = await announcer.announce(
        {**data, "message": "fresh"}, HTTP, created_at=at(clock) - timedelta(seconds=299)
    )
    assert fresh.state is AnnouncementState.DONE
    # a creation time in the future (a clock ahead) counts from now, not later
    future = await announcer.announce(
        {**data, "message": "future", "ttl": 5}, HTTP, created_at=at(clock) + timedelta(hours=1)
    )
    assert future.created_at == at(clock)
    assert sink.delivered[-1][1].expires_at == at(clock) + timedelta(seconds=5)


async def test_expiring_while_being_delivered_is_expired(tmp_path: Path) -> None:
    announcer, sink, _ = make(tmp_path)
    sink.expire = True
    status = await announcer.announce({"message": "hi", "media_player": "media_player.a"}, HTTP)
    assert status.state is AnnouncementState.EXPIRED
    assert status.code == "expired"


# -- duplicates ----------------------------------------------------------------------------------


async def test_duplicates_within_the_window_are_spoken_once(tmp_path: Path) -> None:
    clock = FakeClock(NOON)
    announcer, sink, _ = make(tmp_path, clock, announce={"duplicate_window_s": 30})
    data = {"message": "Someone is at the door.", "media_player": "media_player.a"}
    first = await announcer.announce({**data, "id": "one"}, HTTP)
    clock.now += 29
    again = await announcer.announce(
        {**data, "message": "someone IS at the   door.", "id": "two"}, HTTP
    )
    assert first.state is AnnouncementState.DONE
    assert again.state is AnnouncementState.SUPPRESSED
    assert again.code == "duplicate"
    assert "within 30 s (request one)" in (again.reason or "")
    other_target = await announcer.announce({**data, "media_player": "media_player.b"}, HTTP)
    assert other_target.state is AnnouncementState.DONE
    clock.now += 2  # 31 s after the first
    later = await announcer.announce(data, HTTP)
    assert later.state is AnnouncementState.DONE
    assert len(sink.delivered) == 3


async def test_a_window_of_zero_suppresses_nothing(tmp_path: Path) -> None:
    announcer, sink, _ = make(tmp_path, announce={"duplicate_window_s": 0})
    data = {"message": "hi", "media_player": "media_player.a"}
    states = [(await announcer.announce(data, HTTP)).state for _ in range(3)]
    assert states == [AnnouncementState.DONE] * 3
    assert len(sink.delivered) == 3


async def test_concurrent_duplicates_are_spoken_once(tmp_path: Path) -> None:
    announcer, sink, _ = make(tmp_path)
    data = {"message": "hi", "media_player": "media_player.a"}
    statuses = await asyncio.gather(*(announcer.announce(data, HTTP) for _ in range(5)))
    assert sorted(s.state.value for s in statuses) == ["done"] + ["suppressed"] * 4
    assert len(sink.delivered) == 1


# -- quiet hours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "priority", "spoken"),
    [
        ("23:30", "normal", False),
        ("06:59", "low", False),
        ("23:30", "high", True),
        ("07:00", "normal", True),
        ("12:00", "normal", True),
    ],
)
async def test_quiet_hours_let_only_high_priority_through(
    tmp_path: Path, local: str, priority: str, spoken: bool
) -> None:
    hour, minute = map(int, local.split(":"))
    # Europe/Paris is UTC+1 in January
    moment = datetime(2025, 1, 15, hour, minute, tzinfo=UTC) - timedelta(hours=1)
    clock = FakeClock(moment.timestamp())
    announcer, sink, _ = make(
        tmp_path,
        clock,
        time_zone="Europe/Paris",
        announce={"quiet_hours": {"start": "22:00", "end": "07:00"}},
    )
    status = await announcer.announce(
        {"message": "hi", "media_player": "media_player.a", "priority": priority}, HTTP
    )
    if spoken:
        assert status.state is AnnouncementState.DONE
    else:
        assert status.state is AnnouncementState.SUPPRESSED
        assert status.code == "quiet_hours"
        assert "quiet hours (22:00-07:00)" in (status.reason or "")
        assert sink.delivered == []


async def test_statuses_are_kept_and_listener_errors_do_not_lose_the_result(
    tmp_path: Path,
) -> None:
    announcer, _, _ = make(tmp_path)

    async def broken(status: AnnouncementStatus) -> None:  # noqa: ARG001 - the announcer's listener signature
        raise RuntimeError("listener bug")

    announcer.add_listener(broken)
    status = await announcer.announce(
        {"message": "hi", "media_player": "media_player.a", "id": "kept"}, HTTP
    )
    assert status.state is AnnouncementState.DONE
    assert announcer.status("kept") is status
    assert announcer.status("never") is None


async def test_what_did_not_play_is_not_a_duplicate(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data")
    refused_voice = {"nobody"}

    async def prepare(request: SpeechRequest) -> None:
        if request.voice in refused_voice:
            raise UnknownVoice(request.voice or "", ["alan"])

    announcer = Announcer(settings, prepare, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    data = {"message": "hi", "media_player": ["media_player.a", "media_player.b"]}
    wrong_voice = await announcer.announce({**data, "voice": "nobody"}, HTTP)
    assert wrong_voice.code == "invalid"
    sink.fail["media_player.b"] = "refused"
    corrected = await announcer.announce({**data, "voice": "alan"}, HTTP)
    assert corrected.state is AnnouncementState.PARTIAL
    # b never played it: a retry to b goes through, one to a is a duplicate
    del sink.fail["media_player.b"]
    retry_b = await announcer.announce({**data, "media_player": "media_player.b"}, HTTP)
    assert retry_b.state is AnnouncementState.DONE
    retry_a = await announcer.announce({**data, "media_player": "media_player.a"}, HTTP)
    assert retry_a.state is AnnouncementState.SUPPRESSED


async def test_a_running_announcement_is_found_after_1001_invalid_ones(tmp_path: Path) -> None:
    settings: Settings = config.load(data_dir=tmp_path / "data")
    release = asyncio.Event()

    async def slow(request: SpeechRequest) -> None:  # noqa: ARG001 - the announcer's prepare signature
        await release.wait()

    announcer = Announcer(settings, slow, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    running = await announcer.submit(
        {"message": "hi", "media_player": "media_player.a", "id": "slow-one"}, HTTP
    )
    await asyncio.sleep(0)
    for _ in range(1001):
        await announcer.submit({"message": "hi", "volume": 9}, HTTP)
    assert announcer.status("slow-one") is running
    assert len(announcer._statuses) == 1  # invalid data without an id of its own takes no slot
    for number in range(1001):  # ...and with one, it is pushed out before a running one
        await announcer.submit({"message": "hi", "volume": 9, "id": f"bad-{number}"}, HTTP)
    again = await announcer.submit({"message": "hi", "volume": 9, "id": "slow-one"}, HTTP)
    assert again.code == "invalid"
    assert announcer.status("slow-one") is running
    release.set()
    await running.done.wait()
    assert running.state is AnnouncementState.DONE
    assert announcer.status("slow-one") is running
