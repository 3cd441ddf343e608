"""A simulated Discord on 127.0.0.1 for running the real discord.py client in tests.

- :class:`FakeDiscord` (:mod:`.server`): REST ``/api/v10``, the gateway websocket, the test API
  to push events (``send_interaction``, ``send_message``, ``move_member``) and the logs;
- :class:`FakeVoiceServer` (:mod:`.voice`): voice websocket + UDP, RTP decryption, resume,
  dropped connections (``drop_connections``); :func:`decode_opus` / :func:`count_silence` for
  what it received;
- :mod:`.e2ee`: DAVE end-to-end encryption on that server (``FakeDiscord(dave=True)``): the
  external sender, transitions and the call's other members; :mod:`.dave`: the MLS (RFC 9420)
  messages it signs and reads;
- :mod:`.client`: :func:`patched_discord`, :func:`client_options`, :func:`attach`,
  :func:`running` point a ``discord.Client`` at the fake;
- :mod:`.payloads`: the fixed world (guild, channels, alice, the bot) and payload builders;
- :mod:`.fixtures`: the ``fake_discord`` pytest fixture.
"""

from tests.fakes.discord.client import (
    FAKE_TOKEN,
    attach,
    client_options,
    patched_discord,
    running,
)
from tests.fakes.discord.payloads import (
    ALICE,
    BOT,
    GUILD_ID,
    LOUNGE_CHANNEL_ID,
    STAGE_CHANNEL_ID,
    TEXT_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeUser,
)
from tests.fakes.discord.server import (
    FakeDiscord,
    Followup,
    GatewayOp,
    InteractionResponse,
    SentInteraction,
    SyncCall,
)
from tests.fakes.discord.voice import (
    AEAD_MODE,
    OPUS_SILENCE,
    FakeVoiceServer,
    RtpPacket,
    VoiceOp,
    count_silence,
    decode_opus,
)

__all__ = [
    "AEAD_MODE",
    "ALICE",
    "BOT",
    "FAKE_TOKEN",
    "GUILD_ID",
    "LOUNGE_CHANNEL_ID",
    "OPUS_SILENCE",
    "STAGE_CHANNEL_ID",
    "TEXT_CHANNEL_ID",
    "VOICE_CHANNEL_ID",
    "FakeDiscord",
    "FakeUser",
    "FakeVoiceServer",
    "Followup",
    "GatewayOp",
    "InteractionResponse",
    "RtpPacket",
    "SentInteraction",
    "SyncCall",
    "VoiceOp",
    "attach",
    "client_options",
    "count_silence",
    "decode_opus",
    "patched_discord",
    "running",
]
