"""The MLS (RFC 9420) messages a DAVE voice server sends and reads, encoded by hand.

Discord's voice server is the MLS group's *external sender* (https://daveprotocol.com, "External
Sender"): it announces its signing key (voice opcode 25), proposes adding and removing members
(opcode 27) and relays the members' commits and welcomes (opcodes 28–30), but is never a member.
davey (the MLS member discord.py uses) has no external-sender API, so the simulated server builds
those messages here, from the RFC:

- TLS presentation language, variable-length vectors ``<V>`` with a QUIC-style varint length
  (RFC 9420 §2.1.2);
- ``ExternalSender`` (§12.1.8.1): the signature key and a basic credential (§5.3);
- ``MLSMessage`` / ``PublicMessage`` / ``FramedContent`` (§6, §6.2) from sender type
  ``external`` carrying an ``Add`` (§12.1.1) or ``Remove`` (§12.1.3) proposal;
- the signature: ``SignWithLabel(key, "FramedContentTBS", FramedContentTBS)`` (§5.1.2, §6.1).
  For an external sender ``FramedContentTBS`` holds no ``GroupContext``, so it needs only the
  group id, the epoch and the proposal: no group state. An external proposal has no membership
  tag (§6.2).

DAVE's choices (https://daveprotocol.com, "Protocol Version 1"): ciphersuite 2
(``MLS_128_DHKEMP256_AES128GCM_SHA256_P256``: ECDSA P-256 with SHA-256, DER signatures, SEC1
uncompressed public keys); the group id is the voice channel id as a big-endian uint64, a
member's basic credential identity its user id as a big-endian uint64 (as davey derives them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ADD",
    "REMOVE",
    "ExternalSender",
    "MlsReader",
    "group_id",
    "key_package_identity",
    "opaque",
    "proposals_payload",
    "split_commit_welcome",
    "varint",
]

MLS10 = 1  # ProtocolVersion mls10 (§6)
PUBLIC_MESSAGE = 1  # WireFormat mls_public_message (§6)
SENDER_MEMBER, SENDER_EXTERNAL = 1, 2  # SenderType (§6)
SENDER_NEW_MEMBER_PROPOSAL, SENDER_NEW_MEMBER_COMMIT = 3, 4
PROPOSAL, COMMIT = 2, 3  # ContentType (§6)
ADD, REMOVE = 1, 3  # ProposalType (§12.1)
BASIC_CREDENTIAL, X509_CREDENTIAL = 1, 2  # CredentialType (§5.3)
LEAF_KEY_PACKAGE, LEAF_UPDATE, LEAF_COMMIT = 1, 2, 3  # LeafNodeSource (§7.2)
PROPOSAL_BY_VALUE, PROPOSAL_BY_REFERENCE = 1, 2  # ProposalOrRefType (§12.4)
APPEND, REVOKE = 0, 1  # DAVE opcode 27 operation type


def varint(n: int) -> bytes:
    """RFC 9420 §2.1.2 variable-length integer: 1, 2 or 4 bytes (top two bits: 00, 01, 10)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", n | 0x4000)
    if n < 1 << 30:
        return struct.pack(">I", n | 0x8000_0000)
    raise ValueError(f"MLS vector of {n} bytes is over 2^30 - 1")


def opaque(data: bytes) -> bytes:
    """``opaque data<V>``: the varint length, then the bytes (RFC 9420 §2.1.2)."""
    return varint(len(data)) + data


def group_id(channel_id: int) -> bytes:
    """A DAVE group id: the voice channel id, big-endian uint64 (as davey builds it)."""
    return channel_id.to_bytes(8, "big")


def credential(identity: bytes) -> bytes:
    """A basic ``Credential`` (RFC 9420 §5.3): ``uint16 credential_type = basic``, identity<V>."""
    return struct.pack(">H", BASIC_CREDENTIAL) + opaque(identity)


@dataclass
class ExternalSender:
    """The voice server's external-sender identity: a P-256 key and a basic credential.

    :meth:`package` is opcode 25's payload; :meth:`add` / :meth:`remove` build signed proposals
    for opcode 27 (wrap them with :func:`proposals_payload`).
    """

    identity: bytes = b"\0" * 8
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def public_key(self) -> bytes:
        """The SEC1 uncompressed point (65 bytes), as MLS ciphersuite 2 carries P-256 keys."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def package(self) -> bytes:
        """``ExternalSender`` (RFC 9420 §12.1.8.1): signature_key<V>, then the credential."""
        return opaque(self.public_key()) + credential(self.identity)

    def add(self, group: bytes, epoch: int, key_package: bytes) -> bytes:
        """An ``MLSMessage`` proposing to add the member whose ``KeyPackage`` (§10, the bytes of
        opcode 26) is ``key_package``, for the group's ``epoch`` (§12.1.1)."""
        return self._proposal(group, epoch, struct.pack(">H", ADD) + key_package)

    def remove(self, group: bytes, epoch: int, leaf_index: int) -> bytes:
        """An ``MLSMessage`` proposing to remove the member at ``leaf_index`` (§12.1.3)."""
        return self._proposal(group, epoch, struct.pack(">HI", REMOVE, leaf_index))

    def _proposal(self, group: bytes, epoch: int, proposal: bytes) -> bytes:
        # FramedContent (§6): group_id<V>, uint64 epoch, Sender{external, uint32 sender_index},
        # authenticated_data<V> (empty), ContentType proposal, the Proposal
        content = (
            opaque(group)
            + struct.pack(">QBI", epoch, SENDER_EXTERNAL, 0)
            + opaque(b"")
            + bytes([PROPOSAL])
            + proposal
        )
        head = struct.pack(">HH", MLS10, PUBLIC_MESSAGE)
        # FramedContentTBS (§6.1): version, wire_format, content; no GroupContext for external
        signature = self.sign_with_label(b"FramedContentTBS", head + content)
        # PublicMessage (§6.2): content, FramedContentAuthData{signature<V>} (no confirmation tag
        # for a proposal), no membership tag for an external sender
        return head + content + opaque(signature)

    def sign_with_label(self, label: bytes, content: bytes) -> bytes:
        """``SignWithLabel`` (RFC 9420 §5.1.2): sign ``SignContent{"MLS 1.0 " + label<V>,
        content<V>}`` with ECDSA P-256 SHA-256, DER-encoded."""
        sign_content = opaque(b"MLS 1.0 " + label) + opaque(content)
        return self.key.sign(sign_content, ec.ECDSA(hashes.SHA256()))


def proposals_payload(messages: list[bytes], operation: int = APPEND) -> bytes:
    """DAVE opcode 27's payload (https://daveprotocol.com, ``dave_mls_proposals``): the operation
    type (0 append, 1 revoke) and the proposal ``MLSMessage``s (or refs) as one vector<V>."""
    return bytes([operation]) + opaque(b"".join(messages))


class MlsReader:
    """A cursor over TLS-encoded bytes (RFC 9420 §2.1): read or skip fields, in order.

    Raises ``ValueError`` on truncated input.
    """

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise ValueError(f"MLS data ends at {len(self.data)}: {n} bytes at {self.offset}")
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def varint(self) -> int:
        first = self.uint(1)
        prefix, value = first >> 6, first & 0x3F
        if prefix == 3:
            raise ValueError(f"invalid MLS varint prefix at {self.offset - 1}")
        for _ in range((1 << prefix) - 1):
            value = (value << 8) | self.uint(1)
        return value

    def opaque(self) -> bytes:
        return self.take(self.varint())

    def credential(self) -> bytes:
        """A ``Credential`` (§5.3); returns a basic credential's identity (b"" for X.509)."""
        kind = self.uint(2)
        if kind == BASIC_CREDENTIAL:
            return self.opaque()
        if kind == X509_CREDENTIAL:
            self.opaque()  # certificates<V>
            return b""
        raise ValueError(f"unknown MLS credential type {kind}")

    def leaf_node(self) -> None:
        """Skip a ``LeafNode`` (RFC 9420 §7.2)."""
        self.opaque()  # encryption_key
        self.opaque()  # signature_key
        self.credential()
        # Capabilities: versions, cipher_suites, extensions, proposals, credentials
        for _ in range(5):
            self.opaque()
        source = self.uint(1)
        if source == LEAF_KEY_PACKAGE:
            self.take(16)  # Lifetime: uint64 not_before, not_after
        elif source == LEAF_COMMIT:
            self.opaque()  # parent_hash
        elif source != LEAF_UPDATE:
            raise ValueError(f"unknown MLS leaf node source {source}")
        self.opaque()  # extensions
        self.opaque()  # signature

    def sender(self) -> int:
        """A ``Sender`` (§6); returns its type."""
        kind = self.uint(1)
        if kind in (SENDER_MEMBER, SENDER_EXTERNAL):
            self.uint(4)  # leaf_index / sender_index
        elif kind not in (SENDER_NEW_MEMBER_PROPOSAL, SENDER_NEW_MEMBER_COMMIT):
            raise ValueError(f"unknown MLS sender type {kind}")
        return kind

    def commit_message(self) -> None:
        """Skip an ``MLSMessage`` holding a ``PublicMessage`` commit (§6, §6.2, §12.4)."""
        version, wire_format = self.uint(2), self.uint(2)
        if (version, wire_format) != (MLS10, PUBLIC_MESSAGE):
            raise ValueError(f"not an MLS 1.0 public message: {version}, {wire_format}")
        self.opaque()  # group_id
        self.uint(8)  # epoch
        sender = self.sender()
        self.opaque()  # authenticated_data
        if (content_type := self.uint(1)) != COMMIT:
            raise ValueError(f"MLS content type {content_type}, not a commit")
        self.opaque()  # Commit.proposals<V>
        if self.uint(1):  # optional<UpdatePath> path (§7.6)
            self.leaf_node()
            self.opaque()  # nodes<V>
        self.opaque()  # FramedContentAuthData.signature
        self.opaque()  # confirmation_tag
        if sender == SENDER_MEMBER:
            self.opaque()  # membership_tag


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes | None]:
    """DAVE opcode 28's payload (``dave_mls_commit_welcome``): the commit ``MLSMessage``, then
    an optional ``Welcome`` (RFC 9420 §12.4.3.1) when the commit adds members.

    Returns ``(commit, welcome or None)``; raises ``ValueError`` if the commit is malformed.
    """
    reader = MlsReader(data)
    reader.commit_message()
    commit, rest = data[: reader.offset], data[reader.offset :]
    return commit, rest or None


def key_package_identity(key_package: bytes) -> bytes:
    """The basic credential identity in a ``KeyPackage`` (RFC 9420 §10): for DAVE, the user id
    as a big-endian uint64."""
    reader = MlsReader(key_package)
    reader.uint(2)  # version
    reader.uint(2)  # cipher_suite
    reader.opaque()  # init_key
    reader.opaque()  # leaf_node.encryption_key
    reader.opaque()  # leaf_node.signature_key
    return reader.credential()
