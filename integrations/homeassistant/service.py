"""Home Assistant as a front end of ``oyez run``: ``oyez_announce`` events in, speakers and
voice satellites out, and ``oyez_announce_done`` / ``oyez_announce_failed`` events back.

Every announcement that ends, whatever its source, is reported so automations can chain on it:
``oyez_announce_done`` when every target played it, else ``oyez_announce_failed`` (invalid,
expired, a duplicate, quiet hours, a speaker that refused), with the data of
:meth:`bot.announce.model.AnnouncementStatus.as_json` (``request_id``, ``state``, ``targets``,
``code``, ``reason``, ...).

Several Oyez processes connected to one Home Assistant (``engine.url`` set) all connect (each
plays on speakers and reports back), but one of them holds the event subscription, under a lease
(:mod:`bot.ops.leases`, :data:`EVENT_LEASE_S`) it renews every third of it; the others stand by
unsubscribed, and one of them takes the lease over and subscribes within :data:`EVENT_LEASE_S`
(and a renewal period) of the holder dying or losing Home Assistant. A holder whose renewal
fails (its fencing token is stale: it was paused past its lease and another took over)
unsubscribes and drops any event still queued. Around a takeover, both may hear an event: the
first to claim its ``context.id`` in the shared :attr:`HomeAssistantFrontEnd.events` speaks it.
An event fired while nobody holds the lease (the seconds between a holder's death and the
takeover) is not heard: Home Assistant does not replay events.
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
from bot.ops.leases import Leases
from bot.speech import RequestSource
from bot.web.server import is_loopback_url
from integrations.homeassistant.satellite import SatelliteSink
from integrations.homeassistant.settings import HomeAssistantSettings
from integrations.homeassistant.sink import MediaPlayerSink
from integrations.homeassistant.states import EntityStates
from integrations.homeassistant.visit import StateReader
from integrations.homeassistant.websocket import (
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
    HomeAssistantEvent,
)

__all__ = [
    "DONE_EVENT",
    "EVENT_LEASE",
    "EVENT_LEASE_S",
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
#: The lease on the event subscription (several processes, one engine).
EVENT_LEASE = "homeassistant:events"
#: Seconds the event subscription's lease lasts unrenewed; it is renewed every third of it.
EVENT_LEASE_S = 3.0


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
        #: Who holds the event subscription (None: this process alone, always subscribed).
        self.leases: Leases | None = None
        self.lease_s = EVENT_LEASE_S
        self._token: int | None = None  # our fencing token while we hold the lease
        self._subscribed = False
        self._holding: asyncio.Task[None] | None = None
        announcer.add_listener(self._report)

    @property
    def holds_events(self) -> bool:
        """Whether this process speaks the events (holds the lease, or needs none)."""
        return self.leases is None or self._token is not None

    async def start(self) -> None:
        """Connect and subscribe. Raises :class:`HomeAssistantError` (a wrong URL or token, a
        Home Assistant that cannot be reached, a user that may not subscribe) with the reason;
        once started, a dropped connection is re-established for as long as Oyez runs."""
        self._warn_unreachable_media()
        log.info("home assistant: connecting to %s", _safe_url(self.settings.base_url()))
        if self.sink is not None:
            await self.sink.start()  # subscribed with the connection: states warm from the start
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
        self._subscribed = True
        log.info(
            "home assistant: connected (version %s), listening to %s events",
            self.client.ha_version,
            self.settings.event_type,
        )
        if self.leases is not None:  # subscribed once above: the token may subscribe
            await self._take_turn()
            self._holding = asyncio.create_task(self._hold(), name="oyez-ha-lease")

    async def _hold(self) -> None:
        """Renew (or try to take) the event subscription's lease every third of it."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._take_turn()
            except (HomeAssistantError, TimeoutError) as exc:
                log.warning("home assistant: event subscription not changed: %s", exc)
            except Exception as exc:  # the engine cannot be reached: keep what we have
                log.warning("home assistant: the event subscription's lease: %s", exc)

    async def _take_turn(self) -> None:
        """Hold the lease and the subscription, or neither: renew ours; else take a free one
        (while connected to Home Assistant: a disconnected holder lets another take over)."""
        assert self.leases is not None
        if self._token is not None:
            if self.client.connected and await self.leases.renew(
                EVENT_LEASE, self._token, self.lease_s
            ):
                return
            log.warning(
                "home assistant: gave up the event subscription (fencing token %d): %s",
                self._token,
                "lease lost" if self.client.connected else "not connected",
            )
            await self.leases.release(EVENT_LEASE, self._token)
            self._token = None
            await self._unsubscribe()
            return
        token = None
        if self.client.connected:
            token = await self.leases.acquire(EVENT_LEASE, self.lease_s)
        if token is None:
            await self._unsubscribe()
            return
        if not self._subscribed:
            try:
                await self.client.subscribe_events(self.settings.event_type, self._on_event)
            except BaseException:
                await self.leases.release(EVENT_LEASE, token)  # another may do better
                raise
            self._subscribed = True
        self._token = token
        log.info("home assistant: holding the event subscription (fencing token %d)", token)

    async def _unsubscribe(self) -> None:
        if self._subscribed:
            self._subscribed = False
            await self.client.unsubscribe_events(self.settings.event_type, self._on_event)

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
        await self._let_go()
        if self._reports:  # the last reports, while still connected
            _, late = await asyncio.wait(set(self._reports), timeout=REPORT_GRACE_S)
            for task in late:
                task.cancel()
        if self.sink is not None:
            await self.sink.aclose()
        await self.client.close()

    async def _let_go(self) -> None:
        """Stop renewing and give the lease up, so another process takes over at once."""
        if self._holding is not None:
            self._holding.cancel()
            await asyncio.gather(self._holding, return_exceptions=True)
            self._holding = None
        if self.leases is not None and self._token is not None:
            token, self._token = self._token, None
            try:
                await self.leases.release(EVENT_LEASE, token)
            except Exception as exc:  # it runs out by itself
                log.warning("home assistant: the event subscription's lease: %s", exc)

    def ready(self) -> tuple[bool, str]:
        if self.client.connected:
            standby = "" if self.holds_events else "; another process holds the event subscription"
            return True, f"connected to Home Assistant {self.client.ha_version}{standby}"
        down = self.client.down_for_s()
        if down is None:
            return False, "not connected to Home Assistant"
        return False, f"reconnecting to Home Assistant (down for {down:.0f} s)"

    async def _ours(self, event: HomeAssistantEvent) -> bool:
        """Whether this process speaks ``event``: no other claimed its context id first (one
        that cannot be told apart, or claims that cannot be reached: yes)."""
        if not self.holds_events:  # queued before the lease was lost: the new holder's
            return False
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
    states = StateReader(client, EntityStates(client))
    sink = MediaPlayerSink(
        client,
        parts.pipeline,
        parts.server.media,
        parts.settings.announce,
        speakers=settings.speakers,
        states=states,
    )
    parts.announcer.add_sink(sink)
    parts.announcer.add_sink(
        SatelliteSink(client, parts.pipeline, parts.server.media, parts.settings.announce, states)
    )
    front_end = HomeAssistantFrontEnd(client, parts.announcer, settings, parts.settings.http, sink)
    if parts.engine is not None and not parts.engine.embedded:
        front_end.events = parts.engine.duplicate_window()
        front_end.leases = parts.engine.leases()
    return front_end
