"""The DAVE side of the simulated voice server: external sender, transitions, the other members.

Discord's DAVE protocol (https://daveprotocol.com; Discord's voice-connections page, "End-to-End
Encryption (DAVE Protocol)") on the voice websocket, as this fake speaks it:

- SESSION_DESCRIPTION (op 4) carries ``dave_protocol_version`` 1; the server sends its
  external sender package (op 25, binary) and the client its MLS key package (op 26, binary).
- Each voice channel has one MLS group. Its other members are played by the server: each a
  ``davey.DaveSession`` of its own, first the *listener* (alice by default), more with
  :meth:`DaveServer.member_joins`. Every one of them decrypts each of the client's frames, as
  any member of the call would.
- A new group (no member of the call in one yet): the server proposes (op 27) to add its
  members to the client's pending group; the client commits and welcomes (op 28); the members
  join from the welcome and the server announces the commit to the client (op 29). Discord lets
  every pending member commit and keeps the first commit; here the client's always wins.
- An established group (the client joins again, reconnects after its voice session ended, or
  asked to be re-added after an invalid commit, op 31): a server member commits the server's
  proposals (remove the client's stale leaf, add its new key package) and the client gets the
  welcome (op 30). A member joining or leaving the established group is proposed to the
  client (op 27), which commits; the commit goes to the server's members, the welcome to the
  one joining, and op 29 to the client. (Discord proposes a departed member's removal when it
  leaves; the fake removes the client's stale leaf when it comes back.)
- Op 29 and op 30 carry a transition id; the client answers transition ready (op 23) and the
  server executes it (op 22). A downgrade (a member without DAVE joins) is prepare transition
  (op 21) with ``protocol_version`` 0, then op 23 / op 22 the same way; an upgrade back is
  prepare epoch (op 24: ``transition_id``, ``epoch`` 1, ``protocol_version``), which starts a
  new group whose commit (op 29) then carries that transition id.
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
    order; ``key_packages``: how many op 26 the client sent; ``invalid``: op 31 payloads;
    ``epoch_transition``: the transition id of an op 24 whose group is not committed yet.
    """

    user_id: int
    channel_id: int
    version: int
    pending: dict[int, int] = field(default_factory=dict)
    executed: list[int] = field(default_factory=list)
    key_packages: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)
    epoch_transition: int | None = None


class _Call:
    """One voice channel's MLS group: the server's members and who is at which leaf.

    ``proposed``: the Add (user id) and Remove (leaf index) proposals sent to the client and not
    committed yet; ``welcoming``: the server's members those Adds bring in; ``decrypted``: user
    id → how many of the client's frames that member decrypted.
    """

    def __init__(self, channel_id: int, sender: dave.ExternalSender) -> None:
        self.channel_id = channel_id
        self.group_id = dave.group_id(channel_id)
        self.sender = sender
        self.members: dict[int, davey.DaveSession] = {}
        self.leaves: list[int | None] = []  # user id at each leaf index; None: blank
        self.proposed: list[tuple[int, int]] = []
        self.welcoming: set[int] = set()
        self.decrypted: dict[int, int] = {}

    def join(self, user_id: int) -> davey.DaveSession:
        """A server member (a pending one: it has a group of its own at epoch 0)."""
        member = davey.DaveSession(1, user_id, self.channel_id)
        member.set_external_sender(self.sender.package())
        self.members[user_id] = member
        return member

    def in_group(self) -> dict[int, davey.DaveSession]:
        """The server's members in the established group (a member with a commit of its own
        pending awaits a response, and is in the group still)."""
        joined = (davey.SessionStatus.active, davey.SessionStatus.awaiting_response)
        return {uid: m for uid, m in self.members.items() if m.status in joined}

    @property
    def established(self) -> bool:
        return bool(self.in_group())

    @property
    def epoch(self) -> int:
        return int(next(iter(self.in_group().values())).epoch or 0) if self.established else 0

    def propose(self, payload: bytes) -> None:
        """Hand an op 27 payload to the server's members in the group, as Discord sends it to
        every member: each stores the proposals (a commit refers to them by reference, RFC 9420
        §12.4) and makes a commit of its own, which loses to the client's."""
        for member in self.in_group().values():
            member.process_proposals(davey.ProposalsOperationType.append, payload[1:])

    def apply(self, proposals: list[tuple[int, int]]) -> None:
        """Update :attr:`leaves` as a commit of ``proposals`` does: Removes blank their leaf,
        then each Add takes the leftmost blank leaf or a new one (RFC 9420 §12.3, §7.7)."""
        for kind, value in proposals:
            if kind == dave.REMOVE:
                self.leaves[value] = None
        for kind, value in proposals:
            if kind == dave.ADD:
                if None in self.leaves:
                    self.leaves[self.leaves.index(None)] = value
                else:
                    self.leaves.append(value)


class DaveServer:
    """The voice server's DAVE role for every session: see the module docstring.

    Methods take a session's :class:`DaveState` and return the :data:`Reply` messages to send
    on its websocket, in order. ``listener_id`` is the user id of the member that listens in
    every channel. Set :attr:`spoil_next_commit` to send the next announced commit (op 29) with
    a broken membership tag, as a commit the client cannot process; :attr:`withhold_proposals`
    to leave key packages unanswered (a group that never forms).
    """

    def __init__(self, listener_id: int) -> None:
        self.sender = dave.ExternalSender()
        self.listener_id = listener_id
        self.calls: dict[int, _Call] = {}
        self._transition_ids = itertools.count(1)
        self.spoil_next_commit = False
        self.withhold_proposals = False

    def call(self, channel_id: int) -> _Call:
        """The channel's group, with the listener in it (pending until the client commits)."""
        if channel_id not in self.calls:
            self.calls[channel_id] = _Call(channel_id, self.sender)
            self.calls[channel_id].join(self.listener_id)
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
            state.pending.pop(int(d.get("transition_id", -1)), None)
            return []  # the client starts over with a new key package (op 26): re-added
        raise ValueError(f"unexpected DAVE voice op {op} from the client")

    # -- the call changes (test API) -----------------------------------------------------------
    def downgrade(self, state: DaveState) -> list[Reply]:
        """A member without DAVE joined: prepare a transition to protocol version 0 (op 21)."""
        transition_id = next(self._transition_ids)
        state.pending[transition_id] = 0
        return [Json(PREPARE_TRANSITION, {"transition_id": transition_id, "protocol_version": 0})]

    def upgrade(self, state: DaveState) -> list[Reply]:
        """Every member speaks DAVE again: prepare epoch 1 (op 24), a new group with the same
        server members."""
        old = self.calls.pop(state.channel_id, None)
        call = self.call(state.channel_id)
        for user_id in old.members if old else ():
            if user_id not in call.members:
                call.join(user_id)
        transition_id = state.epoch_transition = next(self._transition_ids)
        d = {"transition_id": transition_id, "epoch": 1, "protocol_version": 1}
        return [Json(PREPARE_EPOCH, d)]

    def member_joins(self, state: DaveState, user_id: int) -> list[Reply]:
        """A member with DAVE joins the client's call: propose adding it (op 27)."""
        call = self.call(state.channel_id)
        if not call.established:
            raise ValueError("a member can join only an established group")
        epoch = call.epoch
        key_package = call.join(user_id).get_serialized_key_package()
        call.proposed, call.welcoming = [(dave.ADD, user_id)], {user_id}
        payload = dave.proposals_payload([self.sender.add(call.group_id, epoch, key_package)])
        call.propose(payload)
        return [Binary(PROPOSALS, payload)]

    def member_leaves(self, state: DaveState, user_id: int) -> list[Reply]:
        """A member leaves the client's call: propose removing its leaf (op 27)."""
        call = self.call(state.channel_id)
        if user_id == self.listener_id or user_id not in call.leaves:
            raise ValueError(f"user {user_id} is the listener or not in the group")
        del call.members[user_id]
        leaf = call.leaves.index(user_id)
        call.proposed, call.welcoming = [(dave.REMOVE, leaf)], set()
        payload = dave.proposals_payload([self.sender.remove(call.group_id, call.epoch, leaf)])
        call.propose(payload)
        return [Binary(PROPOSALS, payload)]

    # -- MLS -----------------------------------------------------------------------------------
    def _on_key_package(self, state: DaveState, key_package: bytes) -> list[Reply]:
        identity = dave.key_package_identity(key_package)
        if int.from_bytes(identity, "big") != state.user_id:
            raise ValueError(f"key package of user {identity.hex()}, not of {state.user_id}")
        call = self.call(state.channel_id)
        if self.withhold_proposals:
            return []
        if call.established:
            return self._welcome_client(state, call, key_package)
        # a new group: the client's (epoch 0, just itself) adds the server's members
        call.leaves = [state.user_id]
        call.proposed = [(dave.ADD, user_id) for user_id in call.members]
        call.welcoming = set(call.members)
        adds = [
            self.sender.add(call.group_id, 0, member.get_serialized_key_package())
            for member in call.members.values()
        ]
        return [Binary(PROPOSALS, dave.proposals_payload(adds))]

    def _welcome_client(self, state: DaveState, call: _Call, key_package: bytes) -> list[Reply]:
        """A server member commits removing the client's stale leaves and adding it anew."""
        committer, *others = call.in_group().values()
        epoch = call.epoch
        stale = [leaf for leaf, user in enumerate(call.leaves) if user == state.user_id]
        proposals = [self.sender.remove(call.group_id, epoch, leaf) for leaf in stale]
        proposals.append(self.sender.add(call.group_id, epoch, key_package))
        payload = dave.proposals_payload(proposals)
        for member in others:
            member.process_proposals(davey.ProposalsOperationType.append, payload[1:])
        result = committer.process_proposals(davey.ProposalsOperationType.append, payload[1:])
        if result is None or result.welcome is None:
            raise ValueError("the server's member made no commit with a welcome for the client")
        for member in (committer, *others):
            member.process_commit(result.commit)
        call.apply([(dave.REMOVE, leaf) for leaf in stale] + [(dave.ADD, state.user_id)])
        transition_id = self._announce(state)
        return [Binary(WELCOME, struct.pack(">H", transition_id) + result.welcome)]

    def _on_commit_welcome(self, state: DaveState, payload: bytes) -> list[Reply]:
        commit, welcome = dave.split_commit_welcome(payload)
        call = self.call(state.channel_id)
        if call.welcoming and welcome is None:
            raise ValueError("a commit adding members without a welcome")
        in_group = call.in_group()
        for user_id, member in call.members.items():
            if user_id in call.welcoming:
                member.process_welcome(welcome or b"")
            elif user_id in in_group:
                member.process_commit(commit)
        call.apply(call.proposed)
        call.proposed, call.welcoming = [], set()
        transition_id = self._announce(state)
        if self.spoil_next_commit:
            self.spoil_next_commit = False
            commit = commit[:-1] + bytes([commit[-1] ^ 0xFF])  # the membership tag's last byte
        return [Binary(ANNOUNCE_COMMIT_TRANSITION, struct.pack(">H", transition_id) + commit)]

    def _announce(self, state: DaveState) -> int:
        transition_id = state.epoch_transition or next(self._transition_ids)
        state.epoch_transition = None
        state.pending[transition_id] = 1
        return transition_id

    # -- media ---------------------------------------------------------------------------------
    def open_frame(self, state: DaveState, frame: bytes) -> tuple[bytes, bool]:
        """The Opus frame inside a media payload and whether it was end-to-end encrypted; a
        DAVE frame is decrypted by each of the server's members in the group, which must agree.

        Raises ``ValueError`` if a DAVE frame does not decrypt for one of them.
        """
        if not frame.endswith(DAVE_MAGIC):
            return frame, False
        call = self.calls.get(state.channel_id)
        members = call.in_group() if call is not None else {}
        if call is None or not members:
            raise ValueError("a DAVE frame before any member is in the group")
        opened: set[bytes] = set()
        for user_id, member in members.items():
            try:
                opened.add(member.decrypt(state.user_id, davey.MediaType.audio, frame))
            except Exception as exc:  # davey raises plain exceptions
                if "Unencrypted" in str(exc):
                    # no valid supplemental data behind the marker: a plain Opus frame whose
                    # last two bytes happen to be 0xFAFA (1 in 65,536), as a receiver tells;
                    # plain it is, and tests that need encryption see e2ee False
                    return frame, False
                raise ValueError(f"DAVE frame failed to decrypt for {user_id}: {exc}") from exc
            call.decrypted[user_id] = call.decrypted.get(user_id, 0) + 1
        if len(opened) != 1:
            raise ValueError("the group's members decrypted a DAVE frame differently")
        return opened.pop(), True
