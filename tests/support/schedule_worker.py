"""One Oyez process of the schedules' cluster test: a scheduler over a shared data folder and
the shared engine, its speaker a sink that appends each delivery to a log file.

``python -m tests.support.schedule_worker '<json>'`` with ``{"data_dir", "engine_url", "log",
"lease_s", "poll_s"}``. Each delivery appends ``<announcement id> <time.time()> <pid>`` as one
line to ``log``. Prints ``ready`` once its schedules are loaded, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from bot.announce.announcer import Announcer
from bot.announce.model import Announcement, Target, TargetResult
from bot.ops import config
from bot.ops.engine import Engine
from bot.schedules.scheduler import Scheduler
from bot.schedules.store import ScheduleBook
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.prepared import PreparedRequest
from tests.support.sinks import RecordingSink


class LoggingSink(RecordingSink):
    """Records each delivery in a file every process appends to (one short write per line)."""

    def __init__(self, log: str) -> None:
        super().__init__()
        self.log = log

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,
        prepared: PreparedRequest | None = None,
    ) -> tuple[list[TargetResult], Utterance | None]:
        line = f"{announcement.id} {time.time():.3f} {os.getpid()}\n".encode()
        descriptor = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
        return await super().deliver(targets, request, announcement, prepared)


async def serve(job: dict[str, Any]) -> None:
    settings = config.load(
        data_dir=job["data_dir"],
        engine={"url": job["engine_url"]},
        announce={"duplicate_window_s": 0},
    )
    async with await Engine.open(settings.engine) as engine:
        announcer = Announcer(settings)
        announcer.add_sink(LoggingSink(job["log"]))
        scheduler = Scheduler(
            settings,
            announcer,
            ScheduleBook(settings.data_dir),
            claims=engine.fire_claims(),
            claim_lease_s=job["lease_s"],
            poll_s=job["poll_s"],
        )
        await scheduler.start()
        print("ready", flush=True)
        try:
            await scheduler.serve()
        finally:
            await scheduler.stop()
            await announcer.aclose()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
