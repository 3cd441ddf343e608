"""What a front end of ``oyez run`` is (:class:`FrontEnd`) and what its factory gets
(:class:`Parts`).

Front ends are found through :data:`integrations.FRONT_ENDS`; each factory takes the shared
:class:`Parts` and returns its front end, or None when it is not configured. Front ends import
this module, never :mod:`bot.service`, which builds and runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.announce.announcer import Announcer
from bot.ops.config import ROLES, Settings
from bot.ops.engine import Engine
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.server import OyezServer

__all__ = ["FrontEnd", "FrontEndFactory", "Parts"]


@dataclass(frozen=True, slots=True)
class Parts:
    """The parts every front end shares: one pipeline, one announcer (a front end may add its
    sink or listener) and one HTTP server (a front end may add routes before it starts), and
    the engine holding the state several processes share (None: embedded), and the roles of
    this process (``run.roles``: a front end may build only part of itself)."""

    settings: Settings
    pipeline: SpeechPipeline
    announcer: Announcer
    server: OyezServer
    engine: Engine | None = None
    roles: frozenset[str] = frozenset(ROLES)


class FrontEnd(Protocol):
    """A part of ``oyez run``: ``start`` returns once it is up (or raises); ``serve`` serves
    until cancelled; ``stop`` releases what it holds, started or not. ``name`` is for logs,
    ``ready`` for ``/readyz``; ``idle`` answers True when it has nothing to do (a scheduler
    without schedules): ``oyez run`` refuses to run only idle front ends. ``idle`` is asked
    before the HTTP server listens; what it reads it reads off the event loop."""

    name: str

    async def idle(self) -> bool: ...

    async def start(self) -> None: ...

    async def serve(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> tuple[bool, str]: ...


FrontEndFactory = Callable[[Parts], FrontEnd | None]
