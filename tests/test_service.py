"""``oyez run``'s wiring: the front ends of ``integrations.FRONT_ENDS`` from the shared parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot import service as service_module
from bot.errors import ConfigError
from bot.ops import config
from bot.schedules.store import ScheduleBook
from bot.service import Service
from integrations import FRONT_ENDS


async def test_front_ends_are_built_in_registry_order_with_their_sinks(tmp_path: Path) -> None:
    settings = config.load(
        data_dir=tmp_path,
        discord={"token": "MTAwMA.secret-bot-token"},
        homeassistant={"url": "http://ha.lan:8123", "token": "t0ken-xyz"},
        wyoming={"uri": "tcp://127.0.0.1:10200"},
        http={"port": 0},
    )
    service = Service(settings)
    await service.build()
    try:
        assert [f.name for f in service.front_ends] == list(FRONT_ENDS)
        names = ["discord", "homeassistant", "wyoming", "scheduler"]
        assert [f.name for f in service.front_ends] == names
        assert set(service.announcer.sinks) == {"discord", "media_player", "satellite"}
        assert not any(f.idle for f in service.front_ends[:3])
        assert service.front_ends[3].idle  # no schedule: alone it would be nothing to run
    finally:
        for front_end in reversed(service.front_ends):
            await front_end.stop()
        await service.pipeline.aclose()


async def test_nothing_to_run_closes_what_the_idle_front_ends_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[ScheduleBook] = []
    close = ScheduleBook.close

    def recorded(self: ScheduleBook) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(ScheduleBook, "close", recorded)
    service = Service(config.load(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="nothing to run"):
        await service.build()
    assert len(closed) == 1
    assert service.front_ends == []
    await service.pipeline.aclose()


class Stubborn:
    """A front end whose serving survives its first cancellation (as discord.py's gateway
    connect can, through Python 3.11's ``wait_for``) and ends only once it is stopped."""

    name = "stubborn"
    idle = False

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.serving = asyncio.Event()

    async def start(self) -> None:
        pass

    async def serve(self) -> None:
        self.serving.set()
        try:
            await self.stopped.wait()
        except asyncio.CancelledError:
            await self.stopped.wait()  # the cancel is lost

    async def stop(self) -> None:
        self.stopped.set()

    def ready(self) -> tuple[bool, str]:
        return True, "stubborn"


async def test_a_front_end_that_outlives_its_cancel_is_stopped_and_the_service_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "STOP_GRACE_S", 0.2)
    service = Service(config.load(data_dir=tmp_path, http={"host": "127.0.0.1", "port": 0}))
    stubborn = Stubborn()
    service.front_ends.append(stubborn)
    serving = asyncio.create_task(service.serve())
    await asyncio.wait_for(stubborn.serving.wait(), 10)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serving, 10)  # before the fix: never, the service hung
    assert stubborn.stopped.is_set()
