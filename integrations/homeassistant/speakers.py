"""One announcement at a time per speaker: :class:`SpeakerQueues`.

Announcements to one ``media_player`` wait in line, by priority (``high`` first), then by
arrival; each starts when the one before it has finished, instead of cutting it off. Different
speakers are served at once, each by a task of its own that lives while its line is not empty.
A run of announcements back to back is one *visit* (:class:`Visit`): what the speaker was doing
is looked at once, before the first, and put back once, after the last. A visit that raises
fails that announcement only; the line goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from bot.announce.model import TargetResult
from bot.speech import Priority

__all__ = ["Playback", "SpeakerQueues", "Visit"]

log = logging.getLogger(__name__)

#: Seconds a visit has to put a speaker back when Oyez stops.
RESTORE_ON_STOP_S = 5.0


class Playback(Protocol):
    """What a speaker is to play; only its ``priority`` matters to the queue."""

    @property
    def priority(self) -> Priority: ...


P = TypeVar("P", bound=Playback)
P_contra = TypeVar("P_contra", bound=Playback, contravariant=True)


class Visit(Protocol[P_contra]):
    """One stay at one speaker, from the first announcement of a run to the last.

    :meth:`play` starts one announcement and returns its result (it must not raise for a
    speaker that refuses: the result carries the error); :meth:`finished` returns when a
    played one is over; :meth:`restore` puts the speaker back as it was, once, at the end
    (it logs what it could not do, and does not raise).
    """

    async def play(self, playback: P_contra) -> TargetResult: ...

    async def finished(self, playback: P_contra) -> None: ...

    async def restore(self, *, wait: bool = True) -> None: ...


@dataclass(order=True, slots=True)
class _Waiting(Generic[P]):
    """An announcement in a speaker's line: ``order`` is (minus its priority's rank, arrival)."""

    order: tuple[int, int]
    playback: P = field(compare=False)
    result: asyncio.Future[TargetResult] = field(compare=False)


class SpeakerQueues(Generic[P]):
    """Lines of announcements, one per speaker. ``visit(entity_id)`` starts a visit (and may
    read the speaker's state: it is called when a run begins). Create inside the event loop."""

    def __init__(self, visit: Callable[[str], Awaitable[Visit[P]]]) -> None:
        self._visit = visit
        self._lines: dict[str, list[_Waiting[P]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._arrivals = itertools.count()

    def waiting(self, entity_id: str) -> int:
        """How many announcements wait for ``entity_id`` (not counting the one playing)."""
        return len(self._lines.get(entity_id, ()))

    async def play(self, entity_id: str, playback: P) -> TargetResult:
        """Queue ``playback`` for ``entity_id``; returns its result once it has started (or
        failed). Cancelling the caller takes it out of the line."""
        future: asyncio.Future[TargetResult] = asyncio.get_running_loop().create_future()
        order = (-playback.priority.rank, next(self._arrivals))
        heapq.heappush(self._lines.setdefault(entity_id, []), _Waiting(order, playback, future))
        if entity_id not in self._workers:
            self._workers[entity_id] = asyncio.create_task(
                self._serve(entity_id), name=f"oyez-ha-speaker-{entity_id}"
            )
        return await future

    async def _serve(self, entity_id: str) -> None:
        line = self._lines[entity_id]
        try:
            while line:  # one visit per run; arrivals during a restore start the next
                await self._run(entity_id, line)
        finally:
            self._workers.pop(entity_id, None)
            for waiting in self._lines.pop(entity_id, []):  # left only when cancelled
                if not waiting.result.done():
                    waiting.result.set_result(TargetResult(entity_id, False, "Oyez stopped"))

    async def _run(self, entity_id: str, line: list[_Waiting[P]]) -> None:
        """Play the line's announcements, one after the other, in one visit."""
        visit: Visit[P] | None = None
        stopping = False
        try:
            while line:
                waiting = heapq.heappop(line)
                if waiting.result.done():  # its caller gave up
                    continue
                if visit is None:
                    visit = await self._opened(entity_id, waiting)
                    if visit is None:
                        continue
                await self._one(entity_id, visit, waiting)
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            if visit is not None:
                await _restored(entity_id, visit, stopping=stopping)

    async def _opened(self, entity_id: str, waiting: _Waiting[P]) -> Visit[P] | None:
        try:
            return await self._visit(entity_id)
        except Exception as exc:  # a bug must not stop the line
            log.exception("%s: could not start a visit", entity_id)
            waiting.result.set_result(TargetResult(entity_id, False, f"internal error: {exc}"))
            return None

    async def _one(self, entity_id: str, visit: Visit[P], waiting: _Waiting[P]) -> None:
        try:
            result = await visit.play(waiting.playback)
        except Exception as exc:
            log.exception("%s: an announcement failed", entity_id)
            result = TargetResult(entity_id, False, f"internal error: {exc}")
        if not waiting.result.done():
            waiting.result.set_result(result)
        if not result.ok:
            return
        try:
            await visit.finished(waiting.playback)
        except Exception:
            log.exception("%s: waiting for the announcement to finish failed", entity_id)

    async def aclose(self) -> None:
        """Stop every line: waiting announcements fail (``Oyez stopped``); each speaker is put
        back at once (within :data:`RESTORE_ON_STOP_S`)."""
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _restored(entity_id: str, visit: Visit[Any], *, stopping: bool) -> None:
    """``visit.restore()``. Oyez stopping (``stopping``, or a cancel during the restore) must
    still put the speaker back: then at once (no ``restore_delay_s``), within
    :data:`RESTORE_ON_STOP_S`."""
    if not stopping:
        task = asyncio.create_task(visit.restore(), name=f"oyez-ha-restore-{entity_id}")
        try:
            await asyncio.shield(task)
            return
        except asyncio.CancelledError:
            task.cancel()  # perhaps in its delay: what it has not done yet is done below
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await _restored(entity_id, visit, stopping=True)
            raise
        except Exception:
            log.exception("%s: restoring failed", entity_id)
            return
    try:
        async with asyncio.timeout(RESTORE_ON_STOP_S):
            await visit.restore(wait=False)
    except TimeoutError:
        log.warning("%s: not put back within %g s", entity_id, RESTORE_ON_STOP_S)
    except Exception:
        log.exception("%s: restoring failed", entity_id)
