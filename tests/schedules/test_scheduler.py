"""The scheduler's loop on a fast-forwarded clock (looptime): fire instants (across DST),
one-shots, restarts, the misfire policy, synthesis ahead and the YAML schedules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot.announce.announcer import Announcer
from bot.errors import ConfigError
from bot.ops import config
from bot.ops.config import Settings
from bot.schedules.model import Schedule
from bot.schedules.scheduler import Scheduler, configured_schedules
from bot.schedules.store import Outcome, ScheduleBook
from bot.service import Service
from bot.speech import OutputProfile, SpeechRequest
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.sinks import DiscordRecordingSink

PARIS = ZoneInfo("Europe/Paris")
CHANNEL = {"guild_id": 1, "channel_id": 2}


@dataclass
class Harness:
    """Schedulers sharing one data directory and one clock, started and stopped at will."""

    settings: Settings
    start: datetime
    sink: DiscordRecordingSink = field(init=False)
    ahead: list[tuple[datetime, str, OutputProfile]] = field(default_factory=list)
    scheduler: Scheduler | None = None
    task: asyncio.Task[None] | None = None
    announcer: Announcer | None = None

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        offset = self.start.timestamp() - loop.time()
        self.clock: Callable[[], float] = lambda: offset + loop.time()
        self.sink = DiscordRecordingSink(self.clock, audio=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.scheduler is not None:
            await self.down()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def synthesize(self, request: SpeechRequest) -> None:
        self.ahead.append((self.now(), request.text, request.output))

    def book(self) -> ScheduleBook:
        return ScheduleBook(self.settings.data_dir)

    async def add(self, **data: object) -> None:
        book = self.book()
        await book.add(Schedule.parse({"discord": CHANNEL, **data}), "cli", self.now())
        book.close()

    async def up(self, **options: float) -> Self:
        self.announcer = Announcer(self.settings, clock=self.clock)
        self.announcer.add_sink(self.sink)
        self.scheduler = Scheduler(
            self.settings,
            self.announcer,
            self.book(),
            synthesize=self.synthesize,
            clock=self.clock,
            poll_s=options.get("poll_s", 600.0),
        )
        await self.scheduler.start()
        self.task = asyncio.create_task(self.scheduler.serve())
        return self

    async def down(self) -> None:
        assert self.scheduler is not None and self.task is not None and self.announcer
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.scheduler.stop()
        await self.announcer.aclose()
        self.scheduler = self.task = None

    async def until(self, moment: datetime) -> None:
        await asyncio.sleep((moment - self.now()).total_seconds())

    def heard_at(self) -> list[datetime]:
        return [moment for moment, _ in self.sink.heard]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        time_zone="Europe/Paris",
        cache={"enabled": True},  # synthesis ahead needs somewhere to keep the audio
        announce={"duplicate_window_s": 0},
    )


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[arg-type,misc]


def close_to(moments: list[datetime], expected: list[datetime]) -> bool:
    return len(moments) == len(expected) and all(
        abs((m - e).total_seconds()) < 0.01 for m, e in zip(moments, expected, strict=True)
    )


@pytest.mark.looptime
async def test_cron_fires_on_the_instant_across_spring_forward(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 28, 12, 0)) as h:
        await h.add(name="night", cron="30 2 * * *", message="It is {time} on {weekday}.")
        await h.up()
        await h.until(paris(2026, 3, 31, 12, 0))
        assert close_to(
            h.heard_at(),
            [paris(2026, 3, 29, 3, 0), paris(2026, 3, 30, 2, 30), paris(2026, 3, 31, 2, 30)],
        )
        # the text is that of each fire time, in the schedule's zone
        assert [text for _, text in h.sink.heard] == [
            "It is 03:00 on Sunday.",
            "It is 02:30 on Monday.",
            "It is 02:30 on Tuesday.",
        ]


@pytest.mark.looptime
async def test_cron_fires_once_across_fall_back(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 10, 24, 12, 0)) as h:
        await h.add(name="repeated", cron="30 2 * * *", message="Repeated hour.")
        await h.add(name="before", cron="30 1 * * *", message="Before the change.")
        await h.up()
        await h.until(paris(2026, 10, 25, 12, 0))
        # each once, 02:30 at its first occurrence (CEST, 00:30 UTC), not again at 01:30 UTC
        assert [text for _, text in h.sink.heard] == ["Before the change.", "Repeated hour."]
        assert close_to(
            h.heard_at(),
            [datetime(2026, 10, 24, 23, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)],
        )


@pytest.mark.looptime
async def test_audio_is_synthesized_ahead_for_the_fire_time(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        await h.add(name="bins", cron="0 19 * * 2", message="Bins out, it is {time}.")
        await h.up()
        await h.until(paris(2026, 3, 3, 19, 1))
        assert close_to(h.heard_at(), [paris(2026, 3, 3, 19, 0)])
        ((moment, text, profile),) = h.ahead
        assert abs((paris(2026, 3, 3, 19, 0) - moment).total_seconds() - 30) < 0.01
        assert (text, profile) == ("Bins out, it is 19:00.", OutputProfile.OGG_OPUS)


@pytest.mark.looptime
async def test_one_shot_fires_once_and_is_kept_as_done(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        at = paris(2026, 3, 3, 18, 25)
        await h.add(name="oven", at=at.isoformat(), message="The oven timer is done.")
        await h.up()
        await h.until(paris(2026, 3, 3, 20, 0))
        assert close_to(h.heard_at(), [at])
        await h.down()
        await h.up()  # a restart does not speak it again
        await h.until(paris(2026, 3, 4, 20, 0))
        assert len(h.sink.heard) == 1
        book = h.book()
        (stored,) = await book.all()
        book.close()
        assert stored.state(PARIS) == "done"
        assert (stored.last_fired, stored.last_outcome) == (at, Outcome.SPOKEN)


@pytest.mark.looptime
async def test_schedules_survive_a_restart_and_fire_after_it(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        await h.add(name="tea", cron="*/5 * * * *", message="Tea.")
        await h.up()
        await h.until(paris(2026, 3, 3, 18, 12))
        assert close_to(h.heard_at(), [paris(2026, 3, 3, 18, 5), paris(2026, 3, 3, 18, 10)])
        await h.down()
        await h.until(paris(2026, 3, 3, 18, 14))  # down two minutes: nothing was due
        await h.up()  # a new scheduler on the same data directory
        await h.until(paris(2026, 3, 3, 18, 22))
        assert close_to(
            h.heard_at(),
            [paris(2026, 3, 3, 18, m) for m in (5, 10, 15, 20)],  # 18:10 not spoken twice
        )


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("catch_up", "back_at", "expected"),
    [
        # down from 18:06 to 18:27: 18:10 … 18:25 missed by more than grace_s: skipped
        (False, 27, [(18, 5, 0, "18:05"), (18, 30, 0, "18:30")]),
        # catch_up: the latest missed alert (18:25, with its own text) is spoken once, at start
        (True, 27, [(18, 5, 0, "18:05"), (18, 27, 0, "18:25"), (18, 30, 0, "18:30")]),
        # back 30 s after 18:25 (within grace_s): that one is only late, so it is spoken
        (False, 25.5, [(18, 5, 0, "18:05"), (18, 25, 30, "18:25"), (18, 30, 0, "18:30")]),
    ],
)
async def test_misfire_policy(
    settings: Settings, catch_up: bool, back_at: float, expected: list[tuple[int, int, int, str]]
) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        await h.add(name="tea", cron="*/5 * * * *", message="Tea at {time}.", catch_up=catch_up)
        await h.up()
        await h.until(paris(2026, 3, 3, 18, 6))
        await h.down()
        minutes, seconds = int(back_at), int(back_at % 1 * 60)
        await h.until(paris(2026, 3, 3, 18, minutes, seconds))
        await h.up()
        await h.until(paris(2026, 3, 3, 18, 31))
        assert close_to(h.heard_at(), [paris(2026, 3, 3, hh, mm, ss) for hh, mm, ss, _ in expected])
        assert [text for _, text in h.sink.heard] == [f"Tea at {t}." for *_, t in expected]


@pytest.mark.looptime
async def test_a_missed_one_shot_is_skipped_and_marked_missed(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        await h.add(name="oven", at=paris(2026, 3, 3, 18, 10).isoformat(), message="Oven.")
        await h.until(paris(2026, 3, 3, 18, 20))  # Oven was not running at 18:10
        await h.up()
        await h.until(paris(2026, 3, 3, 19, 0))
        assert h.sink.heard == []
        book = h.book()
        assert (await book.get("oven")).last_outcome is Outcome.MISSED  # type: ignore[union-attr]
        book.close()


@pytest.mark.looptime
async def test_changes_from_another_process_are_picked_up(settings: Settings) -> None:
    async with Harness(settings, paris(2026, 3, 3, 18, 0)) as h:
        await h.up(poll_s=1.0)
        await asyncio.sleep(10)
        await h.add(name="soon", at=paris(2026, 3, 3, 18, 0, 30).isoformat(), message="Soon.")
        await asyncio.sleep(1.5)
        assert h.scheduler is not None
        assert "next: soon at" in h.scheduler.ready()[1]  # what /readyz says
        book = h.book()
        await book.set_enabled("soon", False, h.now())  # paused before it fires: silent
        await asyncio.sleep(60)
        assert h.sink.heard == []
        await book.set_enabled("soon", True, h.now())  # resumed after its time: nothing to fire
        await book.add(Schedule.parse({"name": "later", "cron": "5 18 * * *", "message": "Later.",
                                 "discord": CHANNEL}), "cli", h.now())  # fmt: skip
        await book.remove("later")
        book.close()
        await h.until(paris(2026, 3, 3, 18, 10))
        assert h.sink.heard == []


async def test_configured_schedules_load_idempotently_and_win_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    yaml_schedules = [
        {"name": "bins", "cron": "0 19 * * 2", "message": "Bins.", "discord": "1/2"},
        {"name": "raid", "cron": "55 20 * * 5", "message": "Raid.", "discord": "1/2"},
    ]
    book = ScheduleBook(data)
    await book.add(Schedule.parse({"name": "BINS", "cron": "0 7 * * *", "message": "CLI bins",
                             "discord": "1/2"}), "cli", datetime.now(UTC))  # fmt: skip
    book.close()
    settings = config.load(data_dir=data, schedules=yaml_schedules, http={"port": 0})
    for _ in range(2):  # twice: the second start changes nothing
        service = Service(settings)
        await service.build()
        (scheduler,) = [f for f in service.front_ends if isinstance(f, Scheduler)]
        await scheduler.start()  # syncs the file's schedules
        revision = await scheduler.book.revision()
        rows = {s.name: s for s in await scheduler.book.all()}
        assert set(rows) == {"bins", "raid"}
        assert rows["bins"].schedule.message == "Bins."  # the file won over the CLI's BINS
        assert {s.origin for s in rows.values()} == {"config"}
        scheduler.book.close()
        await service.pipeline.aclose()
    assert await ScheduleBook(data).revision() == revision  # nothing rewritten the second time
    # removed from the file: removed from the table at the next start
    fewer = config.load(data_dir=data, schedules=yaml_schedules[1:])
    service = Service(fewer)
    await service.build()
    (scheduler,) = [f for f in service.front_ends if isinstance(f, Scheduler)]
    await scheduler.start()
    assert [s.name for s in await scheduler.book.all()] == ["raid"]
    scheduler.book.close()
    await service.pipeline.aclose()


async def test_oyez_run_runs_with_only_schedules(tmp_path: Path) -> None:
    empty = config.load(data_dir=tmp_path / "empty")
    service = Service(empty)
    with pytest.raises(ConfigError, match=r"nothing to run.*add a schedule"):
        await service.build()
    await service.pipeline.aclose()
    only = config.load(
        data_dir=tmp_path / "data",
        schedules=[{"name": "bins", "cron": "0 19 * * 2", "message": "Bins.", "discord": "1/2"}],
    )
    service = Service(only)
    await service.build()
    assert [f.name for f in service.front_ends] == ["scheduler"]
    scheduler = service.front_ends[0]
    assert isinstance(scheduler, Scheduler)
    scheduler.book.close()
    await service.pipeline.aclose()


def test_bad_yaml_schedules_are_a_config_error() -> None:
    settings = config.load(schedules=[{"name": "x", "cron": "every day", "message": "hi"}])
    with pytest.raises(ConfigError, match=r"schedules\[0\]:\n  cron: .*5 fields"):
        configured_schedules(settings)
    twice = [{"name": "x", "cron": "* * * * *", "message": "hi", "discord": "1/2"}] * 2
    with pytest.raises(ConfigError, match="used twice"):
        configured_schedules(config.load(schedules=twice))


def test_unknown_named_targets_in_yaml_schedules_are_a_config_error() -> None:
    unnamed = [{"name": "raid", "cron": "55 20 * * 5", "message": "Raid!", "discord": "hall"}]
    with pytest.raises(ConfigError, match=r"schedules\[0\] \(raid\).*unknown target 'hall'"):
        configured_schedules(config.load(schedules=unnamed))
    named = config.load(
        schedules=unnamed,
        announce={"discord_channels": {"hall": {"guild_id": 1, "channel_id": 2}}},
    )
    assert [s.name for s in configured_schedules(named)] == ["raid"]


def test_the_example_files_schedules_are_valid() -> None:
    """The commented example under ``schedules:`` in config/oyez.example.yaml, uncommented."""
    text = EXAMPLE_CONFIG.read_text()
    block = text.split("\nschedules: []\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("#  "):
            break
        lines.append(line.removeprefix("#  "))
    example = yaml.safe_load("\n".join(lines))
    settings = config.load(
        schedules=example,
        announce={"discord_channels": {"hall": {"guild_id": 1, "channel_id": 2}}},
    )
    assert [s.name for s in configured_schedules(settings)] == ["bins", "raid"]
