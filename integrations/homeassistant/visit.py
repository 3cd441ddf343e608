"""What Oyez does at one Home Assistant speaker: :class:`SpeakerVisit`.

A visit is a run of announcements played back to back on one ``media_player``
(:class:`~integrations.homeassistant.speakers.SpeakerQueues` makes them). Before the first,
its state is kept (:class:`Snapshot`, from the states Home Assistant keeps sending, else one
``get_states``: :class:`StateReader`); each announcement is a ``play_media`` (its volume set
first; without kept states, sent while the state is read when the speaker announces and no
volume is to be set);
after the last, the volume is put back and, on a speaker without announce support, what was
playing is played again from where it was.

Home Assistant 2025.4 facts used here (``homeassistant/components/media_player/const.py``,
``__init__.py``; ``components/sonos/media_player.py``): ``MediaPlayerEntityFeature`` bits
``PAUSE`` 1, ``SEEK`` 2, ``STOP`` 4096, ``MEDIA_ANNOUNCE`` 1048576; ``announce`` is a
top-level field of ``play_media``, ``extra`` a free mapping (the title goes there); Sonos plays
an announcement at ``extra.volume`` (0-100, its audio clip's volume) and ignores
``volume_set`` for it; ``media_seek`` takes ``seek_position`` in seconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.announce.model import TargetResult
from bot.ops.metrics import TIME_TO_FIRST_AUDIO
from bot.speech import Priority, SpeechRequest
from integrations.homeassistant.settings import SpeakerMode, SpeakerSettings
from integrations.homeassistant.states import EntityStates
from integrations.homeassistant.websocket import (
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
)

__all__ = [
    "MEDIA_ANNOUNCE",
    "Playback",
    "Snapshot",
    "SpeakerVisit",
    "StateReader",
    "play_media_data",
    "starting_wait_s",
]

log = logging.getLogger(__name__)

PAUSE, SEEK, STOP, MEDIA_ANNOUNCE = 1, 2, 4096, 1048576
#: Seconds between looks at a player that reports playing the announcement past its length.
POLL_S = 0.5
#: Longest wait past an announcement's length for such a player, seconds.
FINISH_GRACE_S = 30.0
#: Longest wait for a speaker missing while Home Assistant starts, for an announcement without
#: a ttl (one with a ttl waits at most until it runs out), seconds.
STARTING_WAIT_S = 300.0


@dataclass(frozen=True, slots=True)
class Playback:
    """What every speaker of one announcement plays: the published MP3 at ``url``, its
    ``title``, at ``volume`` (0 to 1; None: as it is), ``length_s`` seconds long; ``request``
    is the announcement's speech request (its id in the logs, its priority, its expiry).

    An MP3 still being made (served as it grows) has ``made``: its length in seconds once all
    of it is made (what was made, should the rest fail); ``length_s`` is then unknown (0).
    ``first_made`` is set once its first audio is there to fetch (or its making failed): the
    time to first audio counts to then.
    """

    url: str
    title: str
    volume: float | None
    length_s: float
    request: SpeechRequest
    made: asyncio.Future[float] | None = None
    first_made: asyncio.Event | None = None

    async def length(self) -> float:
        """Seconds long; for one still being made, once it is made."""
        if self.made is None:
            return self.length_s
        return await asyncio.shield(self.made)

    @property
    def priority(self) -> Priority:
        return self.request.priority


def play_media_data(playback: Playback, *, announce: bool) -> dict[str, Any]:
    """The ``media_player.play_media`` data of ``playback``: ``extra.volume`` (0-100, what
    Sonos takes) when it has a volume; ``announce: true`` only when ``announce``."""
    extra: dict[str, Any] = {"title": playback.title}
    if playback.volume is not None:
        extra["volume"] = round(playback.volume * 100)
    data: dict[str, Any] = {
        "media_content_id": playback.url,
        "media_content_type": "music",
        "extra": extra,
    }
    if announce:
        data["announce"] = True
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A speaker before an announcement: its ``state`` (``playing``, ``paused``, ``idle``…),
    the media it had, where in it (``position_s``, seconds, as of when it was taken), its
    ``volume`` (0 to 1; None: not reported) and its ``supported_features`` bits."""

    state: str
    content_id: str | None
    content_type: str | None
    position_s: float | None
    volume: float | None
    features: int

    @classmethod
    def of(cls, state: dict[str, Any], now: datetime | None = None) -> Snapshot:
        """From a Home Assistant state (``{"state", "attributes": {…}}``); a playing
        player's position is carried forward from ``media_position_updated_at`` to ``now``."""
        attributes = state.get("attributes") or {}
        position = _number(attributes.get("media_position"))
        status = str(state.get("state"))
        updated = attributes.get("media_position_updated_at")
        if position is not None and status == "playing" and isinstance(updated, str):
            try:
                since = datetime.fromisoformat(updated)
            except ValueError:
                since = None
            if since is not None and since.tzinfo is not None:
                position += max(((now or datetime.now(UTC)) - since).total_seconds(), 0.0)
        content_id, content_type = (
            attributes.get("media_content_id"),
            attributes.get("media_content_type"),
        )
        features = attributes.get("supported_features")
        return cls(
            state=status,
            content_id=content_id if isinstance(content_id, str) and content_id else None,
            content_type=content_type if isinstance(content_type, str) and content_type else None,
            position_s=position,
            volume=_number(attributes.get("volume_level")),
            features=features if isinstance(features, int) else 0,
        )

    @property
    def resumable(self) -> bool:
        """Whether it was playing (or paused on) media that can be played again."""
        return self.state in ("playing", "paused") and None not in (
            self.content_id,
            self.content_type,
        )

    def announces(self, speaker: SpeakerSettings) -> bool:
        """Whether the speaker gets ``announce: true`` (else: snapshot and resume)."""
        if speaker.mode is SpeakerMode.AUTO:
            return bool(self.features & MEDIA_ANNOUNCE)
        return speaker.mode is SpeakerMode.ANNOUNCE


def starting_wait_s(request: SpeechRequest) -> float:
    """How long ``request`` may wait for a target that is missing while Home Assistant
    starts, seconds: until its ttl runs out (:data:`STARTING_WAIT_S` without one)."""
    if request.expires_at is None:
        return STARTING_WAIT_S
    return max(-request.overdue_s(), 0.0)


class StateReader:
    """Speakers' states: from the warm :class:`~integrations.homeassistant.states.EntityStates`
    when it is current (no round trip), else from ``get_states``, which callers that ask
    while one is under way share (an announcement to ten speakers reads every state once)."""

    def __init__(self, client: HomeAssistantClient, warm: EntityStates | None = None) -> None:
        self.client = client
        #: The states kept current by Home Assistant's events (None: every read asks).
        self.warm = warm
        #: Each speaker's ``supported_features`` as last read (they hardly ever change).
        self.features: dict[str, int] = {}
        #: How many ``get_states`` were sent.
        self.reads = 0
        self._pending: asyncio.Task[list[dict[str, Any]]] | None = None

    def knows(self, entity_id: str) -> bool:
        """Whether :meth:`state` answers ``entity_id`` at once, with no round trip."""
        return self.warm is not None and self.warm.known(entity_id)

    async def state(self, entity_id: str, *, starting_s: float = 0.0) -> dict[str, Any] | None:
        """``entity_id``'s state, None when Home Assistant has no such entity. One that is
        missing or ``unavailable`` while Home Assistant is still starting is waited for, up to
        ``starting_s`` seconds, then looked at again: after a restart Oyez is back on the
        websocket before the integrations have set their entities up, and until they have, a
        registered entity is missing, then (from ``homeassistant_start``) ``unavailable`` with
        ``restored: true`` (``async_setup_entity_restore``, homeassistant/helpers/
        entity_registry.py, 2025.4). Raises :class:`HomeAssistantError`."""
        found = await self._look(entity_id)
        if (
            (found is None or found.get("state") == "unavailable")
            and starting_s > 0
            and await self.client.wait_started(starting_s)
        ):
            found = await self._look(entity_id)
        if found is not None:
            self.features[entity_id] = Snapshot.of(found).features
        return found

    async def _look(self, entity_id: str) -> dict[str, Any] | None:
        if self.warm is not None and self.warm.known(entity_id):
            return self.warm.get(entity_id)
        return await self._read(entity_id)

    async def _read(self, entity_id: str) -> dict[str, Any] | None:
        pending = self._pending
        if pending is None:
            self.reads += 1
            pending = asyncio.create_task(self.client.get_states(), name="oyez-ha-states")
            self._pending = pending
            pending.add_done_callback(self._done)
        states = await asyncio.shield(pending)
        return next((s for s in states if s.get("entity_id") == entity_id), None)

    def _done(self, task: asyncio.Task[list[dict[str, Any]]]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled():
            task.exception()  # retrieved: every caller that still waits gets it raised


class SpeakerVisit:
    """Announcements on ``entity_id``, one after the other, then the speaker put back.

    ``margin_s`` is added to each announcement's length before it counts as finished (the
    speaker's own delay in fetching and starting it).
    """

    def __init__(
        self,
        states: StateReader,
        entity_id: str,
        speaker: SpeakerSettings,
        *,
        margin_s: float = 1.0,
    ) -> None:
        self.states = states
        self.client = states.client
        self.entity_id = entity_id
        self.speaker = speaker
        self.margin_s = margin_s
        self.snapshot: Snapshot | None = None
        #: The volume Oyez last set (None: it set none yet).
        self._level: float | None = None
        self._played: str | None = None  # the last announcement's URL
        self._started = 0.0  # loop time of its play_media

    async def _state(self) -> dict[str, Any] | None:
        return await self.states.state(self.entity_id)

    def _result(self, error: str | None, **fields: Any) -> TargetResult:
        return TargetResult(self.entity_id, error is None, error, **fields)

    async def play(self, playback: Playback) -> TargetResult:
        """Start ``playback`` (its volume set first). Never raises: a failure is the result."""
        request = playback.request
        # only a whole file has a length to tell such a speaker
        if self.speaker.content_length and await playback.length() <= 0:
            return self._result("no audio was made")
        if playback.first_made is not None:
            # the URL only once its first audio is there: a speaker is never stopped for an
            # announcement that then fails, expires or waits out a provider's rate limit
            await playback.first_made.wait()
            if playback.made is not None and playback.made.done() and not playback.made.result():
                return self._result("no audio was made")
        late = request.overdue_s()
        if late > 0:
            return self._result(
                f"its ttl ran out while the speaker was busy ({late:.0f} s late)", expired=True
            )
        if self._blind(playback) and not self.states.knows(self.entity_id):
            return await self._play_while_reading(playback)
        return await self._play_read(playback)

    async def _play_read(self, playback: Playback) -> TargetResult:
        """``play_media`` once the state is read (waited for while Home Assistant starts, up
        to the announcement's ttl), the volume set first."""
        request = playback.request
        try:
            state = await self.states.state(self.entity_id, starting_s=starting_wait_s(request))
        except HomeAssistantError as exc:
            return self._result(f"Home Assistant: {exc}")
        late = request.overdue_s()
        if late > 0:
            return self._result(
                f"its ttl ran out while Home Assistant was starting ({late:.0f} s late)",
                expired=True,
            )
        problem = _unplayable(state)
        if problem is not None:
            return self._result(problem)
        assert state is not None
        if self.snapshot is None:
            self.snapshot = Snapshot.of(state)
        await self._set_volume(playback)
        return await self._start(playback, announce=self.snapshot.announces(self.speaker))

    def _blind(self, playback: Playback) -> bool:
        """Whether ``play_media`` needs nothing from the speaker's state: it announces (said
        so, or its features as last read say so) and no volume is to be set or put back."""
        if self._level is not None or (playback.volume is not None and self.speaker.set_volume):
            return False
        if self.snapshot is not None:
            return self.snapshot.announces(self.speaker)
        if self.speaker.mode is SpeakerMode.AUTO:
            return bool(self.states.features.get(self.entity_id, 0) & MEDIA_ANNOUNCE)
        return self.speaker.mode is SpeakerMode.ANNOUNCE

    async def _play_while_reading(self, playback: Playback) -> TargetResult:
        """``play_media`` while the state is read (one round trip fewer before the speaker
        has the URL); a missing or unavailable speaker still fails."""
        reading = asyncio.ensure_future(self._state())
        try:
            result = await self._start(playback, announce=True)
            state = await reading
        except HomeAssistantError as exc:
            return self._result(f"Home Assistant: {exc}")
        finally:
            reading.cancel()
        if state is None or state.get("state") == "unavailable":
            # the play_media went nowhere: missing, or Home Assistant still starting
            return await self._play_read(playback)
        problem = _unplayable(state)
        if problem is not None:
            return self._result(problem)
        assert state is not None
        if self.snapshot is None:
            self.snapshot = Snapshot.of(state)
        return result

    async def _start(self, playback: Playback, *, announce: bool) -> TargetResult:
        """``play_media``; its failure is the result."""
        request = playback.request
        try:
            await self._call("play_media", play_media_data(playback, announce=announce))
        except HomeAssistantError as exc:
            what = "Home Assistant refused play_media" if isinstance(exc, CommandFailed) else ""
            error = f"{what}: {exc}" if what else str(exc)
            log.warning("announcement %s: %s: %s", request.id, self.entity_id, error)
            return self._result(error)
        self._played, self._started = playback.url, asyncio.get_running_loop().time()
        waited = (datetime.now(UTC) - request.created_at).total_seconds()
        TIME_TO_FIRST_AUDIO.labels(sink="media_player").observe(max(waited, 0.0))
        return self._result(None, duration_s=round(playback.length_s, 3))

    async def _call(self, service: str, data: dict[str, Any] | None = None) -> None:
        await self.client.call_service(
            "media_player", service, data, target={"entity_id": self.entity_id}
        )

    async def _set_volume(self, playback: Playback) -> None:
        """The announcement's volume (or, for one without, the speaker's own again)."""
        assert self.snapshot is not None
        original = self.snapshot.volume
        if not self.speaker.set_volume:
            return
        if original is None:
            if playback.volume is not None:
                log.info(
                    "announcement %s: %s reports no volume; left as it is",
                    playback.request.id,
                    self.entity_id,
                )
            return
        wanted = playback.volume if playback.volume is not None else original
        if wanted == (self._level if self._level is not None else original):
            return
        try:
            await self._call("volume_set", {"volume_level": wanted})
        except HomeAssistantError as exc:
            log.warning(
                "announcement %s: %s: volume not set: %s", playback.request.id, self.entity_id, exc
            )
            return
        self._level = wanted

    async def finished(self, playback: Playback) -> None:
        """Returns when ``playback`` is over: its length (plus ``margin_s``) after
        ``play_media``, or, on a player that reports playing it (its URL, a
        ``media_duration`` of its length), when it stops doing so (at most
        :data:`FINISH_GRACE_S` later)."""
        loop = asyncio.get_running_loop()
        length_s = await playback.length()
        end = self._started + length_s + self.margin_s
        await asyncio.sleep(max(end - loop.time(), 0.0))
        while loop.time() < end + FINISH_GRACE_S:
            try:
                state = await self._state()
            except HomeAssistantError:
                return
            if state is None or not _reports_playing(state, playback.url, length_s):
                return
            await asyncio.sleep(POLL_S)

    async def restore(self, *, wait: bool = True) -> None:
        """After ``restore_delay_s`` (unless not ``wait``): the volume back, and on a speaker
        that does not announce, what was playing played again (sought to where it was, paused
        if it was), or a speaker that was not playing stopped. Each step is done once, even
        when called again after a cancel. Logs what fails; never raises."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        changed = self._level is not None and self._level != snapshot.volume
        resume = self._played is not None and not snapshot.announces(self.speaker)
        if not (changed or resume):
            return
        if wait:
            await asyncio.sleep(self.speaker.restore_delay_s)
        if changed:  # first, so the music does not come back at the announcement's level
            self._level = snapshot.volume
            await self._try("volume_set", {"volume_level": snapshot.volume})
        if resume:
            await self._resume(snapshot)
            self._played = None

    async def _resume(self, snapshot: Snapshot) -> None:
        if not snapshot.resumable:
            try:
                state = await self._state()
            except HomeAssistantError:
                return
            still = state is not None and state.get("state") == "playing"
            ours = (state or {}).get("attributes", {}).get("media_content_id") == self._played
            if still and ours and snapshot.features & STOP:
                await self._try("media_stop")
            return
        data = {
            "media_content_id": snapshot.content_id,
            "media_content_type": snapshot.content_type,
        }
        if not await self._try("play_media", data):
            return
        where = "(its position not restored)"
        if snapshot.position_s and snapshot.features & SEEK:
            seek = {"seek_position": round(snapshot.position_s, 1)}
            if await self._try("media_seek", seek):
                where = f"at {snapshot.position_s:.0f} s"
        if snapshot.state == "paused" and snapshot.features & PAUSE:
            await self._try("media_pause")
        log.info("%s: %s played again %s", self.entity_id, snapshot.content_id, where)

    async def _try(self, service: str, data: dict[str, Any] | None = None) -> bool:
        """``service`` on the speaker; a failure is logged (False)."""
        try:
            await self._call(service, data)
        except HomeAssistantError as exc:
            log.warning("%s: %s failed while putting it back: %s", self.entity_id, service, exc)
            return False
        return True


def _unplayable(state: dict[str, Any] | None) -> str | None:
    """Why a speaker in ``state`` cannot play (None: it can)."""
    if state is None:
        return "Home Assistant has no such entity"
    if state.get("state") == "unavailable":
        return "the speaker is unavailable in Home Assistant"
    return None


def _reports_playing(state: dict[str, Any], url: str, length_s: float) -> bool:
    """Whether ``state`` says the player is still playing the announcement at ``url`` itself:
    its URL, and a ``media_duration`` of its length (a player that keeps an old duration, as
    Home Assistant's demo players do, is judged by the length alone)."""
    attributes = state.get("attributes") or {}
    if state.get("state") != "playing" or attributes.get("media_content_id") != url:
        return False
    duration = _number(attributes.get("media_duration"))
    return duration is not None and abs(duration - length_s) <= max(1.0, 0.1 * length_s)
