"""Announcements on voice satellites (Voice PE, ESPHome and Wyoming satellites):
:class:`SatelliteSink`.

Made once for all satellites and published at an expiring URL, then
``assist_satellite.announce`` with ``media_id`` set to it (Home Assistant 2025.4.4's
``assist_satellite/__init__.py``: ``message``, ``media_id``, ``preannounce``,
``preannounce_media_id``); Home Assistant fetches it, converts it with ffmpeg and streams it to
the satellite, and its service call returns once the satellite has played it. The
announcement's ``chime`` becomes ``preannounce``: false → none; true → the satellite's own
chime, or ``announce.chime_url`` when set; a named chime or an allowed URL → that chime (a
local file is published beside the speech).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from bot.announce.model import Announcement, Target, TargetResult, chime_source
from bot.errors import InvalidRequest, OyezError, RequestExpired
from bot.ops.config import AnnounceSettings
from bot.ops.metrics import TIME_TO_FIRST_AUDIO
from bot.speech import OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from bot.web.server import MediaStore
from integrations.homeassistant.sink import is_url, read_chime_file
from integrations.homeassistant.visit import StateReader, starting_wait_s
from integrations.homeassistant.websocket import (
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
)

__all__ = ["SatelliteSink"]

log = logging.getLogger(__name__)

#: Seconds allowed for a satellite's chime before the announcement (Voice PE's is under 2 s).
PREANNOUNCE_S = 10.0
#: Media extensions a local chime file may have (what :class:`MediaStore` serves).
_CHIME_EXTENSIONS = {".mp3": "mp3", ".wav": "wav", ".ogg": "ogg"}


class SatelliteSink:
    """Plays announcements on Home Assistant ``assist_satellite`` entities."""

    kind: ClassVar[str] = "satellite"
    profile = OutputProfile.MP3

    def __init__(
        self,
        client: HomeAssistantClient,
        pipeline: SpeechPipeline,
        media: MediaStore,
        settings: AnnounceSettings,
        states: StateReader | None = None,
    ) -> None:
        self.client = client
        #: Satellites' states (shared with the speakers': kept warm, or one ``get_states``).
        self.states = states or StateReader(client)
        self.pipeline = pipeline
        self.media = media
        self.settings = settings

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
            preannounce = await self._preannounce(announcement)
            utterance = await self.pipeline.speak(prepared or request)
        except RequestExpired as exc:
            return everyone(str(exc), expired=True), None
        except OyezError as exc:
            log.warning("announcement %s: not synthesized: %s", request.id, exc)
            return everyone(str(exc)), None
        try:
            # a satellite missing while Home Assistant starts is waited for, up to the ttl
            starting_s = starting_wait_s(request)
            found = await asyncio.gather(
                *(self.states.state(e, starting_s=starting_s) for e in entities)
            )
            states = dict(zip(entities, found, strict=True))
        except HomeAssistantError as exc:
            return everyone(f"Home Assistant: {exc}"), utterance
        data: dict[str, Any] = {
            "media_id": self.media.publish(utterance.audio, "mp3"),
            "message": announcement.message,
            **preannounce,
        }
        results = await asyncio.gather(
            *(self._announce(e, states.get(e), data, request, utterance) for e in entities)
        )
        return list(results), utterance

    async def _preannounce(self, announcement: Announcement) -> dict[str, Any]:
        """``preannounce`` (and ``preannounce_media_id``) for ``announcement.chime``. Raises
        :class:`InvalidRequest` for a chime the configuration does not allow and
        :class:`~bot.errors.AudioError` for a chime file that cannot be read."""
        if announcement.chime is False:
            return {"preannounce": False}
        source = chime_source(announcement.chime, self.settings)
        if source is None:  # true, no chime configured: the satellite's own
            return {"preannounce": True}
        if not is_url(source):
            extension = _CHIME_EXTENSIONS.get(Path(source).suffix.lower())
            if extension is None:
                raise InvalidRequest(
                    f"the chime {source} is not an .mp3, .wav or .ogg file: a satellite cannot "
                    "be given it"
                )
            source = self.media.publish(await read_chime_file(source), extension)
        return {"preannounce": True, "preannounce_media_id": source}

    async def _announce(
        self,
        entity: str,
        state: dict[str, Any] | None,
        data: dict[str, Any],
        request: SpeechRequest,
        utterance: Utterance,
    ) -> TargetResult:
        if state is None:
            return TargetResult(entity, False, "Home Assistant has no such entity")
        if state.get("state") == "unavailable":
            return TargetResult(entity, False, "the satellite is unavailable in Home Assistant")
        waited = (datetime.now(UTC) - request.created_at).total_seconds()
        # Home Assistant answers once the satellite has played it all (its async_announce
        # "must block until the announcement has finished playing", developers.home-assistant
        # docs/core/entity/assist-satellite.md): the usual timeout plus the audio's length.
        timeout_s = self.client.request_timeout_s + utterance.duration_s + PREANNOUNCE_S
        try:
            await self.client.call_service(
                "assist_satellite",
                "announce",
                data,
                target={"entity_id": entity},
                timeout_s=timeout_s,
            )
        except HomeAssistantError as exc:
            what = "Home Assistant refused announce" if isinstance(exc, CommandFailed) else ""
            error = f"{what}: {exc}" if what else str(exc)
            log.warning("announcement %s: %s: %s", request.id, entity, error)
            return TargetResult(entity, False, error)
        TIME_TO_FIRST_AUDIO.labels(sink="satellite").observe(max(waited, 0.0))
        return TargetResult(entity, True, duration_s=round(utterance.duration_s, 3))
