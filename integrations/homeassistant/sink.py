"""Announcements on Home Assistant speakers: :class:`MediaPlayerSink`.

Made once for all speakers, published at an expiring URL (:class:`~bot.web.server.MediaStore`),
then given to each speaker's line (:class:`~integrations.homeassistant.speakers.SpeakerQueues`):
one announcement at a time per speaker, all speakers at once. At each speaker a
:class:`~integrations.homeassistant.visit.SpeakerVisit` reads its state (``play_media`` on a
missing or ``unavailable`` entity "succeeds", so that is checked), from the states Home
Assistant keeps sending (:mod:`~integrations.homeassistant.states`: no round trip) or, while
they are not current, with ``get_states`` (alongside ``play_media`` when nothing else is
needed from the state), sets the volume, calls ``play_media`` and puts the speaker back after.
A chime is mixed into the same MP3 (:mod:`bot.audio.mix`): a second ``play_media`` would cut
the first one short.

Without a chime the MP3 grows while it is made (:class:`~bot.web.server.GrowingMedia`): its
URL goes to the speakers once its first sentence is made (a speaker is never stopped for an
announcement that then fails or expires), and each sentence is served as soon as it is
encoded (MP3 frames follow each other: :func:`~bot.audio.mp3.continued`), so a speaker
starts on the first sentence while the later ones are made. A speaker with
``content_length: true`` is given the URL once the whole file is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import aiohttp

from bot.announce.model import Announcement, Target, TargetResult, chime_source
from bot.audio.mix import decode_chime, mix_chime
from bot.audio.mp3 import continued
from bot.audio.transcode import PcmAudio
from bot.errors import AudioError, InvalidRequest, OyezError, RequestExpired
from bot.ops.config import AnnounceSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest, join_utterances
from bot.web.server import GrowingMedia, MediaStore
from integrations.homeassistant.settings import SpeakerSettings
from integrations.homeassistant.speakers import SpeakerQueues
from integrations.homeassistant.visit import Playback, SpeakerVisit, StateReader
from integrations.homeassistant.websocket import CommandFailed, HomeAssistantClient

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


class MediaPlayerSink:
    """Plays announcements on Home Assistant ``media_player`` entities."""

    kind: ClassVar[str] = "media_player"
    profile = OutputProfile.MP3

    def __init__(  # noqa: PLR0913 - keyword-only tunables
        self,
        client: HomeAssistantClient,
        pipeline: SpeechPipeline,
        media: MediaStore,
        settings: AnnounceSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        speakers: Mapping[str, SpeakerSettings] | None = None,
        restore_margin_s: float = 1.0,
        states: StateReader | None = None,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.media = media
        self.settings = settings
        #: ``homeassistant.speakers``: the speakers that need handling of their own.
        self.speakers = dict(speakers or {})
        #: Seconds added to an announcement's length before it counts as finished (the
        #: speaker's own delay in fetching and starting it).
        self.restore_margin_s = restore_margin_s
        self.queues: SpeakerQueues[Playback] = SpeakerQueues(self._visit)
        #: Speakers' states (give one with :class:`EntityStates` to read them with no round
        #: trip; :meth:`start` subscribes it).
        self.states = states or StateReader(client)
        self._session = session
        self._owns_session = session is None
        self._chimes: OrderedDict[str, PcmAudio] = OrderedDict()
        self._chime_lock = asyncio.Lock()

    async def start(self) -> None:
        """Keep the speakers' states warm (subscribed now, or with the next connection); a
        Home Assistant that refuses it leaves every read to ``get_states``."""
        if self.states.warm is not None:
            try:
                await self.states.warm.start()
            except CommandFailed as exc:
                log.warning("home assistant: speaker states not kept warm: %s", exc)

    # -- delivery ------------------------------------------------------------------------------

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,
        prepared: PreparedRequest | None = None,
    ) -> tuple[list[TargetResult], Utterance | None]:
        entities = [str(t) for t in targets]

        def everyone(error: str, *, expired: bool = False) -> list[TargetResult]:
            return [TargetResult(e, False, error, expired=expired) for e in entities]

        try:
            chime_url = self._chime_url(announcement)
        except InvalidRequest as exc:
            return everyone(str(exc)), None
        if chime_url is None:
            return await self._deliver_growing(entities, prepared or request, announcement)
        # mixed below: PCM in, one MP3 out
        request = request.model_copy(update={"output": OutputProfile.WAV})
        try:
            utterance = await self.pipeline.speak(
                request if prepared is None else dataclasses.replace(prepared, request=request)
            )
            audio, length_s = await self._audio(utterance, chime_url)
        except RequestExpired as exc:
            return everyone(str(exc), expired=True), None
        except OyezError as exc:
            log.warning("announcement %s: not synthesized: %s", request.id, exc)
            return everyone(str(exc)), None
        playback = Playback(
            url=self.media.publish(audio, "mp3", ttl_s=self._ttl_s(request)),
            title=speaker_title(announcement.message),
            volume=announcement.volume,
            length_s=length_s,
            request=request,
        )
        results = await asyncio.gather(*(self.queues.play(e, playback) for e in entities))
        return list(results), utterance

    def _ttl_s(self, request: SpeechRequest) -> float:
        """How long the URL lives: as long as it may wait in a speaker's line, and
        ``media_ttl_s`` after that."""
        wait_s = max(-request.overdue_s(), 0.0) if request.expires_at is not None else 0.0
        return self.media.ttl_s + wait_s

    async def _deliver_growing(
        self,
        entities: list[str],
        speech: SpeechRequest | PreparedRequest,
        announcement: Announcement,
    ) -> tuple[list[TargetResult], Utterance | None]:
        """The MP3 served while it is made; every speaker's result once all of it is."""
        request = speech.request if isinstance(speech, PreparedRequest) else speech
        url, media = self.media.publish_growing("mp3", ttl_s=self._ttl_s(request))
        playback = Playback(
            url=url,
            title=speaker_title(announcement.message),
            volume=announcement.volume,
            length_s=0.0,
            request=request,
            made=asyncio.get_running_loop().create_future(),
            first_made=asyncio.Event(),
        )
        # each speaker's turn first: its visit is open, waiting for the first audio, when a
        # cache hit makes it at once
        plays = [asyncio.ensure_future(self.queues.play(e, playback)) for e in entities]
        making = asyncio.create_task(self._make(playback, speech, media), name="oyez-ha-mp3")
        try:
            results = await asyncio.gather(*plays)
            utterance = await making
        except RequestExpired as exc:
            return [TargetResult(e, False, str(exc), expired=True) for e in entities], None
        except OyezError as exc:
            log.warning("announcement %s: not synthesized: %s", request.id, exc)
            return [TargetResult(e, False, str(exc)) for e in entities], None
        finally:
            if not making.done():
                making.cancel()
                with contextlib.suppress(asyncio.CancelledError, OyezError):
                    await making
        length_s = round(utterance.duration_s, 3)
        return [
            dataclasses.replace(r, duration_s=length_s) if r.ok else r for r in results
        ], utterance

    async def _make(
        self, playback: Playback, asked: SpeechRequest | PreparedRequest, media: GrowingMedia
    ) -> Utterance:
        """``asked`` (``playback``'s request) sentence by sentence into ``media``; its
        ``first_made`` is
        set after the first (or a failure), its ``made`` gets the seconds made (also when a
        sentence fails: what was made before it). Raises what
        :meth:`~bot.synthesis.pipeline.SpeechPipeline.speak_sentences` raises."""
        assert playback.made is not None
        assert playback.first_made is not None
        parts: list[Utterance] = []
        try:
            async for segment in self.pipeline.speak_sentences(asked):
                speech = segment.speech
                assert isinstance(speech, Utterance)  # not live: always whole
                media.append(continued(speech.audio) if parts else speech.audio)
                parts.append(speech)
                if not playback.first_made.is_set():
                    playback.first_made.set()
                    await asyncio.sleep(0)  # the waiting speakers' play_media go out first
        except BaseException as exc:
            media.fail(str(exc) or type(exc).__name__)
            raise
        else:
            media.finish()
        finally:
            playback.first_made.set()
            if not playback.made.done():
                playback.made.set_result(sum(p.duration_s for p in parts))
        return join_utterances(playback.request, parts)

    async def _visit(self, entity_id: str) -> SpeakerVisit:
        return SpeakerVisit(
            self.states,
            entity_id,
            self.speakers.get(entity_id) or SpeakerSettings(),
            margin_s=self.restore_margin_s,
        )

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

    async def aclose(self) -> None:
        """Stop every speaker's line (each speaker put back at once), close what was opened."""
        await self.queues.aclose()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
