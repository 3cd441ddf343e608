"""The DAVE side of the simulated voice server: external sender, transitions, a listening member.

Discord's DAVE protocol (https://daveprotocol.com; Discord's voice-connections page, "End-to-End
Encryption (DAVE Protocol)") on the voice websocket, as this fake speaks it:

- SESSION_DESCRIPTION (op 4) carries ``dave_protocol_version`` 1; the server sends its
  external sender package (op 25, binary) and the client its MLS key package (op 26, binary).
- Each voice channel has one MLS group, whose other member here is a *listener*: a second
  ``davey.DaveSession`` (alice by default) held by the server, which decrypts the bot's frames
  as any member of the call would. While the listener has no group yet the server proposes
  (op 27) to add the listener to the client's group; the client commits and welcomes (op 28),
  the listener joins from the welcome and the server announces the commit to the client
  (op 29). When the listener is already in an established group (the bot joins again, or
  reconnects after a voice session ended) the listener commits the server's proposals (remove
  the client's stale leaf, add its new key package) and the client gets the welcome (op 30).
- Op 29 and op 30 carry a transition id; the client answers transition ready (op 23) and the
  server executes it (op 22). A downgrade (a member without DAVE joins) is prepare transition
  (op 21) with ``protocol_version`` 0, then op 23 / op 22 the same way; an upgrade back is
  prepare epoch (op 24, epoch 1), which starts a new group.
- Binary server messages are ``>H seq``, the opcode byte, the payload; binary client messages
  are the opcode byte and the payload. Op 29 / op 30 payloads start with a ``>H`` transition id.
- Media: a DAVE frame is the end-to-end encrypted Opus frame followed by its supplemental data,
  which ends with the magic marker ``0xFAFA`` (https://daveprotocol.com, "Frame Format"); it
  travels inside the transport encryption. Frames without the marker are plain Opus (DAVE off,
  or passed through during a transition).

The MLS messages themselves are built in :mod:`tests.fakes.discord.dave`.
"""

from __future__ import annotations

import itertools
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import davey

from tests.fakes.discord import dave

__all__ = [
    "DAVE_MAGIC",
    "Binary",
    "DaveServer",
    "DaveState",
    "Json",
    "Reply",
]

log = logging.getLogger(__name__)

DAVE_MAGIC = b"\xfa\xfa"
# DAVE voice gateway opcodes (https://daveprotocol.com, "Voice Gateway Opcodes")
PREPARE_TRANSITION, EXECUTE_TRANSITION, TRANSITION_READY, PREPARE_EPOCH = 21, 22, 23, 24
EXTERNAL_SENDER, KEY_PACKAGE, PROPOSALS, COMMIT_WELCOME = 25, 26, 27, 28
ANNOUNCE_COMMIT_TRANSITION, WELCOME, INVALID_COMMIT_WELCOME = 29, 30, 31


@dataclass(frozen=True)
class Json:
    """A JSON voice message to send: ``{"op": op, "d": d}``."""

    op: int
    d: dict[str, Any]


@dataclass(frozen=True)
class Binary:
    """A binary voice message to send: the opcode and its payload (the sequence is added)."""

    op: int
    payload: bytes


Reply = Json | Binary


@dataclass
class DaveState:
    """One voice session's DAVE state, as the server keeps it.

    ``version``: the protocol version in effect (executed transitions); ``pending``: transition
    id → protocol version, announced and not yet executed; ``executed``: transition ids in
    order; ``key_packages``: how many op 26 the client sent; ``invalid``: op 31 payloads.
    """

    user_id: int
    channel_id: int
    version: int
    pending: dict[int, int] = field(default_factory=dict)
    executed: list[int] = field(default_factory=list)
    key_packages: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)


class _Call:
    """One voice channel's MLS group: the listener's view and who is at which leaf."""

    def __init__(self, channel_id: int, listener_id: int, sender: dave.ExternalSender) -> None:
        self.group_id = dave.group_id(channel_id)
        self.listener_id = listener_id
        self.listener = davey.DaveSession(1, listener_id, channel_id)
        self.listener.set_external_sender(sender.package())
        self.leaves: list[int | None] = []  # user id at each leaf index; None: blank

    @property
    def established(self) -> bool:
        return bool(self.listener.status == davey.SessionStatus.active)

    def seat(self, user_id: int) -> None:
        """Record ``user_id`` at the leftmost blank leaf, as an MLS Add places it (§12.1.1)."""
        if None in self.leaves:
            self.leaves[self.leaves.index(None)] = user_id
        else:
            self.leaves.append(user_id)


class DaveServer:
    """The voice server's DAVE role for every session: see the module docstring.

    Methods take a session's :class:`DaveState` and return the :data:`Reply` messages to send
    on its websocket, in order. ``listener_id`` is the user id of the member that listens.
    """

    def __init__(self, listener_id: int) -> None:
        self.sender = dave.ExternalSender()
        self.listener_id = listener_id
        self.calls: dict[int, _Call] = {}
        self._transition_ids = itertools.count(1)

    def call(self, channel_id: int) -> _Call:
        if channel_id not in self.calls:
            self.calls[channel_id] = _Call(channel_id, self.listener_id, self.sender)
        return self.calls[channel_id]

    # -- the session's messages ----------------------------------------------------------------
    def start(self, state: DaveState) -> list[Reply]:
        """After SESSION_DESCRIPTION: the external sender package (op 25)."""
        return [Binary(EXTERNAL_SENDER, self.sender.package())] if state.version else []

    def on_binary(self, state: DaveState, op: int, payload: bytes) -> list[Reply]:
        """A binary message from the client: a key package (op 26) or commit/welcome (op 28)."""
        if op == KEY_PACKAGE:
            state.key_packages += 1
            return self._on_key_package(state, payload)
        if op == COMMIT_WELCOME:
            return self._on_commit_welcome(state, payload)
        raise ValueError(f"unexpected binary voice op {op} from the client")

    def on_json(self, state: DaveState, op: int, d: dict[str, Any]) -> list[Reply]:
        """Transition ready (op 23) → execute (op 22); invalid commit/welcome (op 31) noted."""
        if op == TRANSITION_READY:
            transition_id = int(d["transition_id"])
            if transition_id not in state.pending:
                raise ValueError(f"transition ready for unknown transition {transition_id}")
            state.version = state.pending.pop(transition_id)
            state.executed.append(transition_id)
            return [Json(EXECUTE_TRANSITION, {"transition_id": transition_id})]
        if op == INVALID_COMMIT_WELCOME:
            log.warning("fake voice: the client refused commit/welcome %r", d)
            state.invalid.append(d)
            return []  # the client starts over with a new key package (op 26)
        raise ValueError(f"unexpected DAVE voice op {op} from the client")

    def downgrade(self, state: DaveState) -> list[Reply]:
        """A member without DAVE joined: prepare a transition to protocol version 0 (op 21)."""
        transition_id = next(self._transition_ids)
        state.pending[transition_id] = 0
        return [Json(PREPARE_TRANSITION, {"transition_id": transition_id, "protocol_version": 0})]

    def upgrade(self, state: DaveState) -> list[Reply]:
        """Every member speaks DAVE again: prepare epoch 1 (op 24), a new group."""
        self.calls.pop(state.channel_id, None)
        return [Json(PREPARE_EPOCH, {"protocol_version": 1, "epoch": 1})]

    # -- MLS -----------------------------------------------------------------------------------
    def _on_key_package(self, state: DaveState, key_package: bytes) -> list[Reply]:
        identity = dave.key_package_identity(key_package)
        if int.from_bytes(identity, "big") != state.user_id:
            raise ValueError(f"key package of user {identity.hex()}, not of {state.user_id}")
        call = self.call(state.channel_id)
        if not call.established:
            # the client's group (epoch 0, just itself) adds the listener: the client commits
            add = self.sender.add(call.group_id, 0, call.listener.get_serialized_key_package())
            return [Binary(PROPOSALS, dave.proposals_payload([add]))]
        # the listener's group adds the client (and drops its stale leaf): the listener commits
        epoch = int(call.listener.epoch or 0)
        proposals = [
            self.sender.remove(call.group_id, epoch, leaf)
            for leaf, user in enumerate(call.leaves)
            if user == state.user_id
        ]
        proposals.append(self.sender.add(call.group_id, epoch, key_package))
        result = call.listener.process_proposals(
            davey.ProposalsOperationType.append, dave.proposals_payload(proposals)[1:]
        )
        if result is None or result.welcome is None:
            raise ValueError("the listener made no commit with a welcome for the new member")
        call.listener.process_commit(result.commit)
        call.leaves = [None if user == state.user_id else user for user in call.leaves]
        call.seat(state.user_id)
        transition_id = self._announce(state)
        return [Binary(WELCOME, struct.pack(">H", transition_id) + result.welcome)]

    def _on_commit_welcome(self, state: DaveState, payload: bytes) -> list[Reply]:
        commit, welcome = dave.split_commit_welcome(payload)
        call = self.call(state.channel_id)
        if welcome is None:
            raise ValueError("commit without a welcome: the listener was not added")
        call.listener.process_welcome(welcome)
        call.leaves = [state.user_id, self.listener_id]  # the committer's group: it, then the added
        transition_id = self._announce(state)
        return [Binary(ANNOUNCE_COMMIT_TRANSITION, struct.pack(">H", transition_id) + commit)]

    def _announce(self, state: DaveState) -> int:
        transition_id = next(self._transition_ids)
        state.pending[transition_id] = 1
        return transition_id

    # -- media ---------------------------------------------------------------------------------
    def open_frame(self, state: DaveState, frame: bytes) -> tuple[bytes, bool]:
        """The Opus frame inside a media payload and whether it was end-to-end encrypted.

        Raises ``ValueError`` if a DAVE frame does not decrypt for the listener.
        """
        if not frame.endswith(DAVE_MAGIC):
            return frame, False
        call = self.calls.get(state.channel_id)
        if call is None or not call.established:
            raise ValueError("a DAVE frame before the listener is in the group")
        try:
            return call.listener.decrypt(state.user_id, davey.MediaType.audio, frame), True
        except Exception as exc:  # davey raises plain exceptions
            raise ValueError(f"DAVE frame failed to decrypt: {exc}") from exc
