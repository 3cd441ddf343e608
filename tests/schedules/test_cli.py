"""``oyez schedule``: exit codes and messages, and a schedule added by the command while a
scheduler runs (same data directory) is picked up and spoken without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.announce.announcer import Announcer
from bot.cli import main
from bot.ops import config
from bot.schedules.scheduler import Scheduler
from bot.schedules.store import ScheduleBook
from tests.support.sinks import DiscordRecordingSink


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OYEZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OYEZ_TIME_ZONE", "Europe/Paris")
    return tmp_path / "data"


def oyez(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["schedule", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("data_dir")
def test_add_list_pause_resume_remove(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = oyez(
        capsys, "add", "bins", "--cron", "0 19 * * 2", "--tz", "Europe/London",
        "--discord", "123/456", "--media-player", "media_player.kitchen", "--priority", "high",
        "--speed", "0.9", "--volume", "0.35", "--chime", "default", "Bins out, it is {weekday}.",
    )  # fmt: skip
    assert code == 0
    assert out.startswith("added bins")
    code, out, _ = oyez(capsys, "list", "--json")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["state"] == "active"
    assert (listed["speed"], listed["volume"], listed["chime"]) == (0.9, 0.35, True)
    assert listed["discord"] == [{"guild_id": 123, "channel_id": 456}]
    assert listed["media_player"] == ["media_player.kitchen"]
    upcoming = datetime.fromisoformat(listed["next_fire"])
    assert (upcoming.weekday(), upcoming.hour, upcoming.minute) == (1, 19, 0)  # a Tuesday
    assert upcoming.utcoffset() in (timedelta(0), timedelta(hours=1))  # London time
    assert upcoming > datetime.now(UTC)
    assert oyez(capsys, "pause", "bins")[0] == 0
    assert "paused" in oyez(capsys, "list")[1]
    assert json.loads(oyez(capsys, "list", "--json")[1])["next_fire"] is None
    assert oyez(capsys, "resume", "bins")[0] == 0
    assert json.loads(oyez(capsys, "list", "--json")[1])["state"] == "active"
    assert oyez(capsys, "remove", "bins")[:2] == (0, "removed bins\n")
    assert oyez(capsys, "list")[1] == ""


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--cron", "61 * * * *"], "cron: '61 * * * *' is not a valid cron expression"),
        (["--cron", "0 19 * * 2 *"], "must have 5 fields"),
        (["--cron", "0 19 * * 2", "--tz", "Europe/Atlantis"], "unknown time zone"),
        (["--at", "2020-01-01T10:00:00+00:00"], "is in the past"),
        (["--at", "2099-01-01T10:00:00"], "must carry a UTC offset"),
        (["--cron", "0 19 * * 2", "--discord", "12/abc"], "--discord '12/abc'"),
        (["--cron", "0 19 * * 2", "--discord", "raid"], "unknown target 'raid'"),
        (["--cron", "0 19 * * 2", "--media-player", "kitchen"], "not a media player entity"),
        (["--cron", "0 19 * * 2", "--voice", "nobody"], "unknown voice 'nobody'"),
        (["--cron", "0 19 * * 2", "--speed", "4"], "speed: Input should be less than or equal"),
        (["--cron", "0 19 * * 2", "--chime", "gong"], "chime: 'gong' is neither a named chime"),
        (["--cron", "0 19 * * 2", "--message-is", "x"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    data_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    if "--discord" not in args and "--media-player" not in args:
        args = [*args, "--discord", "1/2"]
    try:
        code, _, err = oyez(capsys, "add", "alert", *args, "Time for {weekday}.")
    except SystemExit as exc:  # argparse's own errors exit 2 too
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2
    assert problem in err
    book = ScheduleBook(data_dir)
    assert asyncio.run(book.all()) == []
    book.close()


@pytest.mark.usefixtures("data_dir")
def test_bad_placeholder_and_unknown_names_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = oyez(capsys, "add", "a", "--cron", "* * * * *", "--discord", "1/2", "{x.y}")
    assert (code, "attribute access" in err) == (2, True)
    code, _, err = oyez(capsys, "add", "a", "--cron", "* * * * *", "--discord", "1/2", "{hour}")
    assert (code, "unknown placeholder {hour}" in err) == (2, True)
    for action in ("remove", "pause", "resume"):
        code, _, err = oyez(capsys, action, "ghost")
        assert (code, "no schedule named 'ghost'" in err) == (2, True)
    assert oyez(capsys, "add", "a", "--cron", "* * * * *", "--discord", "1/2", "hi")[0] == 0
    code, _, err = oyez(capsys, "add", "a", "--cron", "* * * * *", "--discord", "1/2", "hi")
    assert (code, "a schedule named 'a' exists" in err) == (2, True)


async def test_a_schedule_added_by_the_cli_is_picked_up_by_a_running_scheduler(
    data_dir: Path, tmp_path: Path
) -> None:
    settings = config.load(data_dir=data_dir)
    announcer = Announcer(settings)
    sink = DiscordRecordingSink(time.time, audio=False)
    announcer.add_sink(sink)
    scheduler = Scheduler(settings, announcer, ScheduleBook(data_dir))  # real clock, 1 s poll
    await scheduler.start()
    running = asyncio.create_task(scheduler.serve())
    try:
        at = datetime.fromtimestamp(int(time.time()) + 6, UTC)
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "schedule", "add", "oven", "--at", at.isoformat(),
            "--discord", "1/2", "The oven timer is done.",
            cwd=tmp_path, env=os.environ.copy(), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await command.communicate()
        assert command.returncode == 0, out
        added = time.time()
        assert at.timestamp() - added > 1.5, "the command took too long for this test"
        while "next: oven at" not in scheduler.ready()[1]:  # what /readyz says
            assert time.time() - added < 5, "not picked up within 5 s"
            await asyncio.sleep(0.05)
        await asyncio.wait_for(sink.arrived.wait(), 10)
        ((moment, text),) = sink.heard
        assert text == "The oven timer is done."
        assert 0 <= (moment - at).total_seconds() < 0.25  # on the second
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await scheduler.stop()
        await announcer.aclose()
