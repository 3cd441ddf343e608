"""The floor of an announcement that comes to a program as a Home Assistant event (for
``bench/ha.py``): the least any such program can take. A process of its own, like ``oyez run``:
subscribed to :data:`EVENT` over Home Assistant's websocket, it answers each event with
``media_player.play_media`` of audio it already holds (no text read, no cache looked up, no
queue), served from its own HTTP server. Oyez's ``oyez_announce`` makes the same two hops
(the event to it, ``play_media`` back); ``tts.speak`` makes neither, Home Assistant calling
``play_media`` itself.

``python -m bench.event_floor HA_URL HTTP_PORT MP3_FILE``, the access token in the environment's
``BENCH_HA_TOKEN`` (not on a command line, which any user of the machine can read); it listens
on HTTP_PORT once subscribed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

#: The event it answers; its data: ``media_player`` (an entity id).
EVENT = "bench_floor_announce"


async def serve(ha_url: str, token: str, port: int, audio: bytes) -> None:
    app = web.Application()

    async def media(_: web.Request) -> web.Response:
        return web.Response(body=audio, content_type="audio/mpeg")

    app.router.add_get("/floor.mp3", media)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    url = f"http://127.0.0.1:{port}/floor.mp3"
    ids = itertools.count(1)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{ha_url}/api/websocket", max_msg_size=0) as ws,
    ):
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": token})
        if (await ws.receive_json())["type"] != "auth_ok":
            raise SystemExit("Home Assistant refused the token")
        await ws.send_json({"id": next(ids), "type": "subscribe_events", "event_type": EVENT})
        if not (await ws.receive_json()).get("success"):
            raise SystemExit(f"Home Assistant refused the subscription to {EVENT}")
        await web.TCPSite(runner, "127.0.0.1", port).start()  # listening: ready
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            reply: dict[str, Any] = message.json()
            if reply.get("type") != "event":
                continue
            speaker = reply["event"]["data"]["media_player"]
            await ws.send_json(
                {
                    "id": next(ids),
                    "type": "call_service",
                    "domain": "media_player",
                    "service": "play_media",
                    "service_data": {
                        "media_content_id": url,
                        "media_content_type": "music",
                        "announce": True,
                    },
                    "target": {"entity_id": speaker},
                }
            )
    await runner.cleanup()


def main() -> None:
    ha_url, port, mp3 = sys.argv[1:4]
    asyncio.run(serve(ha_url, os.environ["BENCH_HA_TOKEN"], int(port), Path(mp3).read_bytes()))


if __name__ == "__main__":
    main()
