"""The announcements' shared stores, conformance suites over both engines (embedded, Redis):
the duplicate window and the status board."""

from __future__ import annotations

import asyncio

from bot.ops.engine import Engine
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

KITCHEN = "the washing machine has finished.\nmedia_player.kitchen"
HALL = "the washing machine has finished.\nmedia_player.hall"


async def test_a_message_goes_to_a_target_once_per_window(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    window = engine.duplicate_window()
    assert await window.claim([KITCHEN], "r1", 30) is None
    assert await window.claim([KITCHEN], "r2", 30) == "r1"
    assert await window.claim([HALL, KITCHEN], "r3", 30) == "r1"
    assert await window.claim([HALL], "r4", 30) is None  # r3 recorded nothing


async def test_only_its_sender_forgets_a_message(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    window = engine.duplicate_window()
    assert await window.claim([KITCHEN, HALL], "r1", 30) is None
    await window.forget([KITCHEN], "r2")
    assert await window.claim([KITCHEN], "r2", 30) == "r1"
    await window.forget([KITCHEN], "r1")  # it did not play there
    assert await window.claim([KITCHEN], "r2", 30) is None
    assert await window.claim([HALL], "r2", 30) == "r1"


async def test_the_window_passes(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    window = engine.duplicate_window()
    assert await window.claim([KITCHEN], "r1", 0.1) is None
    await asyncio.sleep(0.2)
    assert await window.claim([KITCHEN], "r2", 30) is None


async def test_of_the_same_message_at_once_one_goes(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    window = engine.duplicate_window()
    found = await asyncio.gather(*(window.claim([KITCHEN], f"r{n}", 30) for n in range(20)))
    assert found.count(None) == 1


async def test_the_board_keeps_each_requests_latest_status(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    board = engine.status_board()
    assert await board.find("door-1") is None
    await board.publish("door-1", {"request_id": "door-1", "state": "queued"})
    await board.publish("door-1", {"request_id": "door-1", "state": "done", "targets": []})
    assert await board.find("door-1") == {"request_id": "door-1", "state": "done", "targets": []}
