"""Announcements on Home Assistant speakers: :class:`MediaPlayerSink`.

Made once for all speakers, published at an expiring URL (:class:`~bot.web.server.MediaStore`),
then ``media_player.play_media`` with ``announce: true`` (top-level in Home Assistant 2025.4's
``MEDIA_PLAYER_PLAY_MEDIA_SCHEMA``, which refuses other unknown fields: the title goes in
``extra``). A chime is mixed into the same MP3 (:mod:`bot.audio.mix`). One ``get_states`` per
announcement finds missing or ``unavailable`` speakers (``play_media`` on them "succeeds") and the
volume to restore after ``volume_set``; overlapping announcements restore the first's level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from bot.announce.model import Announcement, Target, TargetResult, chime_source
from bot.audio.mix import decode_chime, mix_chime
from bot.audio.transcode import PcmAudio
from bot.errors import AudioError, InvalidRequest, OyezError, RequestExpired
from bot.ops.config import AnnounceSettings
from bot.ops.metrics import TIME_TO_FIRST_AUDIO
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.server import MediaStore
from integrations.homeassistant.websocket import (
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
)

__all__ = ["MediaPlayerSink", "speaker_title"]

log = logging.getLogger(__name__)

#: Largest chime accepted, bytes.
MAX_CHIME_BYTES = 5 * 1024 * 1024
#: Chimes kept decoded in memory (by URL).
KEPT_CHIMES = 8
#: Longest title sent to a speaker, characters.
TITLE_LENGTH = 80


def speaker_title(message: str) -> str:
    """The title a speaker shows: the message, cut to :data:`TITLE_LENGTH` characters."""
    message = " ".join(message.split())
    if len(message) <= TITLE_LENGTH:
        return message
    return message[: TITLE_LENGTH - 1].rstrip() + "…"


def is_url(source: str) -> bool:
    """Whether a chime source is an http(s) URL (else it is a local file path)."""
    return source.lower().startswith(("http://", "https://"))


async def read_chime_file(path: str) -> bytes:
    """Up to :data:`MAX_CHIME_BYTES` + 1 bytes of the local chime file ``path`` (``~``
    expanded). Raises :class:`AudioError` naming the path when it cannot be read."""

    def read() -> bytes:
        with Path(path).expanduser().open("rb") as file:
            return file.read(MAX_CHIME_BYTES + 1)

    try:
        return await asyncio.to_thread(read)
    except OSError as exc:
        raise AudioError(f"cannot read the chime file {path}: {exc.strerror or exc}") from None


@dataclass(slots=True)
class _Restore:
    """A speaker's volume to put back: ``level`` (0 to 1) by ``task``."""

    level: float
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class _Playback:
    """What every speaker of one announcement plays: the published MP3 at ``url``, its
    ``title``, at ``volume`` (0 to 1; None: as it is), ``length_s`` seconds long; ``request``
    is the announcement's speech request (its id in the logs, its creation time)."""

    url: str
    title: str
    volume: float | None
    length_s: float
    request: SpeechRequest


class MediaPlayerSink:
    """Plays announcements on Home Assistant ``media_player`` entities."""

    kind: ClassVar[str] = "media_player"
    profile = OutputProfile.MP3

    def __init__(
        self,
        client: HomeAssistantClient,
        pipeline: SpeechPipeline,
        media: MediaStore,
        settings: AnnounceSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        restore_margin_s: float = 1.0,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.media = media
        self.settings = settings
        #: Seconds added to the announcement's length before the volume is restored (the
        #: speaker's own delay in fetching and starting it).
        self.restore_margin_s = restore_margin_s
        self._session = session
        self._owns_session = session is None
        self._chimes: OrderedDict[str, PcmAudio] = OrderedDict()
        self._chime_lock = asyncio.Lock()
        self._restores: dict[str, _Restore] = {}

    # -- delivery ------------------------------------------------------------------------------

    async def deliver(
        self, targets: list[Target], request: SpeechRequest, announcement: Announcement
    ) -> tuple[list[TargetResult], Utterance | None]:
        entities = [str(t) for t in targets]

        def everyone(error: str, *, expired: bool = False) -> list[TargetResult]:
            return [TargetResult(e, False, error, expired=expired) for e in entities]

        try:
            chime_url = self._chime_url(announcement)
        except InvalidRequest as exc:
            return everyone(str(exc)), None
        if chime_url is not None:  # mixed below: PCM in, one MP3 out
            request = request.model_copy(update={"output": OutputProfile.WAV})
        try:
            utterance = await self.pipeline.speak(request)
            audio, length_s = await self._audio(utterance, chime_url)
        except RequestExpired as exc:
            return everyone(str(exc), expired=True), None
        except OyezError as exc:
            log.warning("announcement %s: not synthesized: %s", request.id, exc)
            return everyone(str(exc)), None
        try:
            states = {s.get("entity_id"): s for s in await self.client.get_states()}
        except HomeAssistantError as exc:
            return everyone(f"Home Assistant: {exc}"), utterance
        playback = _Playback(
            url=self.media.publish(audio, "mp3"),
            title=speaker_title(announcement.message),
            volume=announcement.volume,
            length_s=length_s,
            request=request,
        )
        results = await asyncio.gather(*(self._play(e, states.get(e), playback) for e in entities))
        return list(results), utterance

    def _chime_url(self, announcement: Announcement) -> str | None:
        """The chime's URL or file (:func:`~bot.announce.model.chime_source`). Raises
        :class:`~bot.errors.InvalidRequest` for one the configuration does not allow."""
        source = chime_source(announcement.chime, self.settings)
        if announcement.chime is True and source is None:
            log.warning("chime: true, but announce.chime_url is not set: no chime")
        return source

    async def _audio(self, utterance: Utterance, chime_url: str | None) -> tuple[bytes, float]:
        """The MP3 to publish and its length in seconds."""
        if chime_url is None:
            return utterance.audio, utterance.duration_s
        chime: PcmAudio | None = None
        try:
            chime = await self._chime(chime_url)
        except (AudioError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("announcement %s: no chime (%s): %s", utterance.request_id, chime_url, exc)
        speech = AudioChunk(
            utterance.audio, AudioEncoding.WAV, utterance.sample_rate, utterance.channels
        )
        encoded = await mix_chime(self.pipeline.transcoder, speech, chime, OutputProfile.MP3)
        return encoded.data, encoded.duration_s

    async def _chime(self, url: str) -> PcmAudio:
        """The chime at ``url``, decoded (:func:`~bot.audio.mix.decode_chime`; fetched once).

        Raises ``aiohttp.ClientError``, ``TimeoutError`` or :class:`AudioError`.
        """
        async with self._chime_lock:
            cached = self._chimes.get(url)
            if cached is not None:
                self._chimes.move_to_end(url)
                return cached
            data = await (self._fetch(url) if is_url(url) else read_chime_file(url))
            if len(data) > MAX_CHIME_BYTES:
                raise AudioError(f"the chime is larger than {MAX_CHIME_BYTES} bytes")
            pcm = await decode_chime(self.pipeline.transcoder, data)
            self._chimes[url] = pcm
            while len(self._chimes) > KEPT_CHIMES:
                self._chimes.popitem(last=False)
            return pcm

    async def _fetch(self, url: str) -> bytes:
        """Up to :data:`MAX_CHIME_BYTES` + 1 bytes of ``url``; a redirect is not followed (it
        could lead off the allowed hosts). Raises ``aiohttp.ClientError``, ``TimeoutError``,
        :class:`AudioError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=15)
        async with self._session.get(url, timeout=timeout, allow_redirects=False) as reply:
            if reply.status != 200:
                raise AudioError(f"fetching the chime answered HTTP {reply.status}")
            return await reply.content.read(MAX_CHIME_BYTES + 1)

    async def _play(
        self, entity: str, state: dict[str, Any] | None, playback: _Playback
    ) -> TargetResult:
        request, length_s = playback.request, playback.length_s
        if state is None:
            return TargetResult(entity, False, "Home Assistant has no such entity")
        if state.get("state") == "unavailable":
            return TargetResult(entity, False, "the speaker is unavailable in Home Assistant")
        previous = await self._set_volume(entity, state, playback.volume, request)
        try:
            await self.client.call_service(
                "media_player",
                "play_media",
                {
                    "media_content_id": playback.url,
                    "media_content_type": "music",
                    "announce": True,
                    "extra": {"title": playback.title},
                },
                target={"entity_id": entity},
            )
        except HomeAssistantError as exc:
            if previous is not None:
                self._restore_later(entity, previous, 0.0)
            what = "Home Assistant refused play_media" if isinstance(exc, CommandFailed) else ""
            error = f"{what}: {exc}" if what else str(exc)
            log.warning("announcement %s: %s: %s", request.id, entity, error)
            return TargetResult(entity, False, error)
        waited = (datetime.now(UTC) - request.created_at).total_seconds()
        TIME_TO_FIRST_AUDIO.labels(sink="media_player").observe(max(waited, 0.0))
        if previous is not None:
            self._restore_later(entity, previous, length_s + self.restore_margin_s)
        return TargetResult(entity, True, duration_s=round(length_s, 3))

    # -- volume --------------------------------------------------------------------------------

    async def _set_volume(
        self,
        entity: str,
        state: dict[str, Any],
        volume: float | None,
        request: SpeechRequest,
    ) -> float | None:
        """Set ``volume``; returns the level to restore later (None: nothing to restore)."""
        if volume is None:
            return None
        attributes = state.get("attributes") or {}
        level = attributes.get("volume_level")
        if not isinstance(level, int | float) or isinstance(level, bool):
            log.info("announcement %s: %s reports no volume; left as it is", request.id, entity)
            return None
        pending = self._restores.pop(entity, None)
        original = float(level)
        if pending is not None:  # an earlier announcement's level is still on: keep the first
            pending.task.cancel()
            original = pending.level
        try:
            await self.client.call_service(
                "media_player", "volume_set", {"volume_level": volume}, target={"entity_id": entity}
            )
        except HomeAssistantError as exc:
            log.warning("announcement %s: %s: volume not set: %s", request.id, entity, exc)
            if pending is not None:
                self._restore_later(entity, original, 0.0)
            return None
        return original

    def _restore_later(self, entity: str, level: float, delay_s: float) -> None:
        task = asyncio.create_task(
            self._restore(entity, level, delay_s), name=f"oyez-ha-volume-{entity}"
        )
        self._restores[entity] = _Restore(level, task)

    async def _restore(self, entity: str, level: float, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        current = self._restores.get(entity)
        if current is not None and current.task is asyncio.current_task():
            del self._restores[entity]
        try:
            await self.client.call_service(
                "media_player", "volume_set", {"volume_level": level}, target={"entity_id": entity}
            )
        except HomeAssistantError as exc:
            log.warning("%s: volume not restored to %g: %s", entity, level, exc)

    async def aclose(self) -> None:
        """Restore every volume still waiting (at once), close what was opened."""
        restores, self._restores = self._restores, {}
        for entity, pending in restores.items():
            pending.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending.task
            if self.client.connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self._restore(entity, pending.level, 0.0)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
