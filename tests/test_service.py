"""``oyez run``'s wiring: the front ends of ``integrations.FRONT_ENDS`` from the shared parts."""

from __future__ import annotations

from pathlib import Path

import pytest

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
        http={"port": 0},
    )
    service = Service(settings)
    await service.build()
    try:
        assert [f.name for f in service.front_ends] == list(FRONT_ENDS)
        assert [f.name for f in service.front_ends] == ["discord", "homeassistant", "scheduler"]
        assert set(service.announcer.sinks) == {"discord", "media_player"}
        assert not any(f.idle for f in service.front_ends[:2])
        assert service.front_ends[2].idle  # no schedule: alone it would be nothing to run
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
