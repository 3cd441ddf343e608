"""Home Assistant as a front end of ``oyez run``: ``oyez_announce`` events in, speakers and
voice satellites out, and ``oyez_announce_done`` / ``oyez_announce_failed`` events back.

Every announcement that ends, whatever its source, is reported so automations can chain on it:
``oyez_announce_done`` when every target played it, else ``oyez_announce_failed`` (invalid,
expired, a duplicate, quiet hours, a speaker that refused), with the data of
:meth:`bot.announce.model.AnnouncementStatus.as_json` (``request_id``, ``state``, ``targets``,
``code``, ``reason``, ...).

Several Oyez processes connected to one Home Assistant (``engine.url`` set) each hear every
event; the first to claim its ``context.id`` in the shared :attr:`HomeAssistantFrontEnd.events`
speaks it, the others drop it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bot.announce.announcer import Announcer
from bot.announce.model import AnnouncementState, AnnouncementStatus
from bot.announce.shared import DuplicateWindow
from bot.frontend import Parts
from bot.ops.config import HttpSettings
from bot.speech import RequestSource
from bot.web.server import is_loopback_url
from integrations.homeassistant.satellite import SatelliteSink
from integrations.homeassistant.settings import HomeAssistantSettings
from integrations.homeassistant.sink import MediaPlayerSink
from integrations.homeassistant.websocket import (
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
    HomeAssistantEvent,
)

__all__ = [
    "DONE_EVENT",
    "FAILED_EVENT",
    "HomeAssistantFrontEnd",
    "homeassistant_front_end",
]

log = logging.getLogger(__name__)

DONE_EVENT = "oyez_announce_done"
FAILED_EVENT = "oyez_announce_failed"
#: Seconds :meth:`HomeAssistantFrontEnd.stop` waits for the last reports to go out.
REPORT_GRACE_S = 5.0
#: An event older than this on arrival, seconds, is logged as a sign of clock skew.
SKEW_WARNING_S = 30.0
#: Seconds an event's context id stays claimed (Home Assistant never replays an event).
EVENT_CLAIM_S = 600.0


class HomeAssistantFrontEnd:
    """Listens to ``settings.event_type`` and reports every finished announcement back."""

    name = "homeassistant"

    async def idle(self) -> bool:
        return False

    def __init__(
        self,
        client: HomeAssistantClient,
        announcer: Announcer,
        settings: HomeAssistantSettings,
        http: HttpSettings,
        sink: MediaPlayerSink | None = None,
    ) -> None:
        self.client = client
        self.announcer = announcer
        self.settings = settings
        self.http = http
        self.sink = sink
        self._reports: set[asyncio.Task[None]] = set()
        #: Shared with the other processes that hear the same events (None: this one only).
        self.events: DuplicateWindow | None = None
        announcer.add_listener(self._report)

    async def start(self) -> None:
        """Connect and subscribe. Raises :class:`HomeAssistantError` (a wrong URL or token, a
        Home Assistant that cannot be reached, a user that may not subscribe) with the reason;
        once started, a dropped connection is re-established for as long as Oyez runs."""
        self._warn_unreachable_media()
        log.info("home assistant: connecting to %s", _safe_url(self.settings.base_url()))
        await self.client.connect()
        try:
            await self.client.subscribe_events(self.settings.event_type, self._on_event)
        except HomeAssistantError as exc:
            await self.client.close()
            admin = isinstance(exc, CommandFailed) and exc.code == "unauthorized"
            hint = " (the token must be an administrator's)" if admin else ""
            raise HomeAssistantError(
                f"subscribing to {self.settings.event_type} events failed: {exc}{hint}"
            ) from None
        log.info(
            "home assistant: connected (version %s), listening to %s events",
            self.client.ha_version,
            self.settings.event_type,
        )

    def _warn_unreachable_media(self) -> None:
        media = self.http.base_url()
        if is_loopback_url(media) and not is_loopback_url(self.settings.base_url()):
            log.warning(
                "http: speakers fetch announcements from %s, a loopback address, while Home "
                "Assistant is at %s: speakers cannot reach it; set OYEZ_HTTP__PUBLIC_URL (or "
                "http.public_url) to an address on your network",
                media,
                _safe_url(self.settings.base_url()),
            )

    async def serve(self) -> None:
        await self.client.wait_closed()

    async def stop(self) -> None:
        if self._reports:  # the last reports, while still connected
            _, late = await asyncio.wait(set(self._reports), timeout=REPORT_GRACE_S)
            for task in late:
                task.cancel()
        if self.sink is not None:
            await self.sink.aclose()
        await self.client.close()

    def ready(self) -> tuple[bool, str]:
        if self.client.connected:
            return True, f"connected to Home Assistant {self.client.ha_version}"
        down = self.client.down_for_s()
        if down is None:
            return False, "not connected to Home Assistant"
        return False, f"reconnecting to Home Assistant (down for {down:.0f} s)"

    async def _ours(self, event: HomeAssistantEvent) -> bool:
        """Whether this process speaks ``event``: no other claimed its context id first (one
        that cannot be told apart, or claims that cannot be reached: yes)."""
        if self.events is None or not event.context_id:
            return True
        try:
            earlier = await self.events.claim(
                [f"ha-event:{event.context_id}"], event.context_id, EVENT_CLAIM_S
            )
        except Exception as exc:
            log.warning("home assistant: cannot claim event %s: %s", event.context_id, exc)
            return True
        if earlier is not None:
            log.debug("home assistant: event %s is another process's", event.context_id)
        return earlier is None

    async def _on_event(self, event: HomeAssistantEvent) -> None:
        if not await self._ours(event):
            return
        if event.time_fired is not None:
            # Events are never replayed, so one fired long ago means the two clocks differ
            # (or Home Assistant was stalled): the ttl counts from time_fired all the same.
            late_s = (datetime.now(UTC) - event.time_fired).total_seconds()
            if late_s > SKEW_WARNING_S:
                log.warning(
                    "home assistant: an event fired %.0f s before it arrived: is this machine's "
                    "clock in step with Home Assistant's? (announcement ttls count from then)",
                    late_s,
                )
        await self.announcer.submit(
            event.data,
            RequestSource.HOMEASSISTANT,
            created_at=event.time_fired,
            requester=event.user_id,
        )

    async def _report(self, status: AnnouncementStatus) -> None:
        # Sent from a task: the announcement is final now, not when Home Assistant is back.
        event = DONE_EVENT if status.state is AnnouncementState.DONE else FAILED_EVENT
        task = asyncio.create_task(self._fire(event, status), name=f"oyez-ha-report-{status.id}")
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _fire(self, event: str, status: AnnouncementStatus) -> None:
        try:
            await self.client.fire_event(event, status.as_json())
        except HomeAssistantError as exc:
            log.warning("announcement %s: %s not sent to Home Assistant: %s", status.id, event, exc)


def _safe_url(url: str) -> str:
    """``url`` without any user name or password in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def homeassistant_front_end(parts: Parts) -> HomeAssistantFrontEnd | None:
    """The Home Assistant front end when ``homeassistant.url`` and ``token`` are set (its
    speaker and satellite sinks added to the announcer). Raises
    :class:`~bot.errors.ConfigError` for a wrong ``homeassistant`` section."""
    settings = HomeAssistantSettings.from_settings(parts.settings)
    if not settings.enabled:
        return None
    assert settings.token is not None
    client = HomeAssistantClient(
        settings.websocket_url(),
        settings.token,
        reconnect_min_s=settings.reconnect_min_s,
        reconnect_max_s=settings.reconnect_max_s,
        ping_interval_s=settings.ping_interval_s,
        request_timeout_s=settings.request_timeout_s,
    )
    sink = MediaPlayerSink(
        client,
        parts.pipeline,
        parts.server.media,
        parts.settings.announce,
        speakers=settings.speakers,
    )
    parts.announcer.add_sink(sink)
    parts.announcer.add_sink(
        SatelliteSink(client, parts.pipeline, parts.server.media, parts.settings.announce)
    )
    front_end = HomeAssistantFrontEnd(client, parts.announcer, settings, parts.settings.http, sink)
    if parts.engine is not None and not parts.engine.embedded:
        front_end.events = parts.engine.duplicate_window()
    return front_end
