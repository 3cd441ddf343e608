"""``oyez run`` inside a test: a built :class:`~bot.service.Service` served in a task until one
of its front ends is ready (connected to Home Assistant, its Wyoming server listening…), and
cancelled when the block ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from bot.frontend import FrontEnd
from bot.service import Service

__all__ = ["front_end_of", "served"]

F = TypeVar("F", bound=FrontEnd)


def front_end_of(service: Service, kind: type[F]) -> F:
    """``service``'s front end of type ``kind`` (it must have one)."""
    return next(f for f in service.front_ends if isinstance(f, kind))


@contextlib.asynccontextmanager
async def served(
    service: Service, ready: type[FrontEnd], timeout_s: float = 30.0
) -> AsyncIterator[Service]:
    """``service`` (built) served until its front end of type ``ready`` says it is ready; what
    serving raised meanwhile is raised here, ``TimeoutError`` after ``timeout_s``."""
    serving = asyncio.create_task(service.serve())
    front_end = front_end_of(service, ready)
    try:
        async with asyncio.timeout(timeout_s):
            while not front_end.ready()[0]:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.05)
        yield service
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
