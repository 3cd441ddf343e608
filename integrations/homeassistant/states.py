"""Home Assistant's entity states kept warm: :class:`EntityStates`.

One ``subscribe_entities`` subscription (filtered to the domains Oyez plays on) gives every
state of those domains at once, then each change as it happens; so an announcement reads a
speaker's state here, with no ``get_states`` round trip before its ``play_media``. Changes
come on the connection the commands use (for an integration that writes its state within the
service call, before the call's answer). A dropped connection makes the states stale: until
the next connection's subscription has sent them all again (which replaces them, entities
removed in the gap included), :meth:`EntityStates.get` does not answer and callers read
``get_states``.

Message shapes (Home Assistant 2025.4.4, ``components/websocket_api/commands.py``
``handle_subscribe_entities`` and ``messages.py`` ``_state_diff_event``; ``core.py``
``State.as_compressed_state``): the first event is ``{"a": {entity_id: {"s": state,
"a": attributes, "c": context, "lc": last changed, "lu"?: last updated}}}``; later ones are
``{"a": {…}}`` (added), ``{"r": [entity_id, …]}`` (removed) or ``{"c": {entity_id: {"+":
{"s"?, "a"?: changed attributes, "lc"?, "lu"?, "c"?}, "-"?: {"a": [removed attribute
names]}}}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from integrations.homeassistant.websocket import HomeAssistantClient

__all__ = ["DOMAINS", "EntityStates"]

log = logging.getLogger(__name__)

#: The domains whose states are kept: speakers and voice satellites.
DOMAINS = ("media_player", "assist_satellite")


def _state(entity_id: str, compressed: dict[str, Any]) -> dict[str, Any]:
    """A compressed state in ``get_states``' shape (the fields Oyez reads)."""
    attributes = compressed.get("a")
    return {
        "entity_id": entity_id,
        "state": str(compressed.get("s")),
        "attributes": MappingProxyType(dict(attributes) if isinstance(attributes, dict) else {}),
    }


def _changed(old: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``diff`` (``{"+": …, "-": …}``) applied, as a new state."""
    added = diff.get("+") if isinstance(diff.get("+"), dict) else {}
    removed = diff.get("-") if isinstance(diff.get("-"), dict) else {}
    assert isinstance(added, dict)
    assert isinstance(removed, dict)
    attributes = dict(old["attributes"])
    if isinstance(added.get("a"), dict):
        attributes.update(added["a"])
    for name in removed.get("a") or ():
        attributes.pop(name, None)
    state = str(added["s"]) if "s" in added else old["state"]
    return {
        "entity_id": old["entity_id"],
        "state": state,
        "attributes": MappingProxyType(attributes),
    }


class EntityStates:
    """The states of :data:`DOMAINS`' entities, as Home Assistant last said. :meth:`start`
    subscribes (before or after the client connects); :meth:`get` is a state or None when
    they are not known to be current."""

    def __init__(self, client: HomeAssistantClient, domains: Iterable[str] = DOMAINS) -> None:
        self.client = client
        self.domains = tuple(domains)
        self._states: dict[str, dict[str, Any]] = {}
        self._synced: int | None = None  # the subscription whose full states we hold
        self._started = False
        #: How many times all states were received (the first connection, each reconnect).
        self.syncs = 0

    async def start(self) -> None:
        """Subscribe (on this connection, if there is one, and every later one). Raises
        :class:`~integrations.homeassistant.websocket.CommandFailed` when Home Assistant
        refuses now."""
        if self._started:
            return
        self._started = True
        message = {"type": "subscribe_entities", "include": {"domains": list(self.domains)}}
        await self.client.subscribe_stream(message, self._on_message)

    @property
    def warm(self) -> bool:
        """Whether the states are current: connected, and this connection's subscription has
        sent them all."""
        return self._synced is not None and self.client.stream_id(self._on_message) == self._synced

    def known(self, entity_id: str) -> bool:
        """Whether :meth:`get` can answer for ``entity_id`` (warm, and of a kept domain)."""
        return self.warm and entity_id.partition(".")[0] in self.domains

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """``entity_id``'s state (``{"entity_id", "state", "attributes"}``, read-only
        attributes) or None when Home Assistant has no such entity; only when
        :meth:`known` (else ``KeyError``)."""
        if not self.known(entity_id):
            raise KeyError(entity_id)
        return self._states.get(entity_id)

    def _on_message(self, subscription: int, event: dict[str, Any]) -> None:
        added = event.get("a")
        if subscription != self._synced:
            # a new subscription (a new connection): its first event has every state
            if not isinstance(added, dict):
                return
            self._states = {}
            self._synced = subscription
            self.syncs += 1
            log.debug("home assistant: %d states received", len(added))
        if isinstance(added, dict):
            for entity_id, compressed in added.items():
                if isinstance(compressed, dict):
                    self._states[entity_id] = _state(entity_id, compressed)
        for entity_id in event.get("r") or ():
            self._states.pop(entity_id, None)
        changes = event.get("c")
        if isinstance(changes, dict):
            for entity_id, diff in changes.items():
                old = self._states.get(entity_id)
                if old is not None and isinstance(diff, dict):
                    self._states[entity_id] = _changed(old, diff)
