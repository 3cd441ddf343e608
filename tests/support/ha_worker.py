"""One Oyez process of the Home Assistant cluster test: ``oyez run``'s service (its Home
Assistant front end, speakers and HTTP server) over a shared data folder and the shared engine.

``python -m tests.support.ha_worker '<json>'`` with ``{"data_dir", "engine_url", "ha_url",
"token"}``. Prints ``ready <its media base URL>`` once connected to Home Assistant, then
``holding`` once it holds the event subscription's lease, and serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bot.ops import config
from bot.ops.engine import Engine
from bot.service import Service
from integrations.homeassistant.service import HomeAssistantFrontEnd


async def serve(job: dict[str, Any]) -> None:
    settings = config.load(
        data_dir=job["data_dir"],
        http={"host": "127.0.0.1", "port": 0},
        homeassistant={"url": job["ha_url"], "token": job["token"], "reconnect_min_s": 0.2},
        announce={"duplicate_window_s": 0},
        engine={"url": job["engine_url"]},
    )
    async with await Engine.open(settings.engine) as engine:
        service = Service(settings, engine=engine)
        await service.build()
        serving = asyncio.create_task(service.serve())
        front = next(f for f in service.front_ends if isinstance(f, HomeAssistantFrontEnd))
        while not front.ready()[0]:  # noqa: ASYNC110 - connected by serve()
            await asyncio.sleep(0.02)
        print("ready", service.server.media.base_url, flush=True)
        while not front.holds_events:  # noqa: ASYNC110 - taken over by its lease task
            await asyncio.sleep(0.02)
        print("holding", flush=True)
        await serving


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
