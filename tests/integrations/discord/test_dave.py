"""Voice under DAVE, Discord's end-to-end encryption, with the real discord.py client (and its
``davey``) against the simulated Discord, whose voice server speaks DAVE as Discord documents it
(https://daveprotocol.com; see :mod:`tests.fakes.discord.e2ee`): what a second member of the
call decrypts is what is heard.
"""

from __future__ import annotations

import aiohttp
import davey
import discord
import pytest

from integrations.discord import connection
from integrations.discord.bot import OyezBot
from tests.fakes.discord import ALICE, BOT, GUILD_ID, VOICE_CHANNEL_ID, FakeDiscord
from tests.fakes.discord.dave import (
    ExternalSender,
    MlsReader,
    group_id,
    key_package_identity,
    proposals_payload,
    split_commit_welcome,
    varint,
)
from tests.fakes.discord.fixtures import DAVE_ON, fake_discord, oyez_bot  # noqa: F401
from tests.fakes.discord.listening import heard, runs
from tests.fakes.discord.server import SentInteraction
from tests.support.asr import Transcriber, word_error_rate

FIRST = "The washing machine has finished."
SECOND = "Someone is at the front door."
THIRD = "The kettle has boiled."
BOB = 3001  # a member with DAVE who joins the call
LONG = (
    "This announcement is long on purpose: it talks about the weather, the garden, the bins "
    "and the cat, so that someone can join the call while it is being said."
)


async def say(fake: FakeDiscord, text: str) -> SentInteraction:
    """``/say text`` from alice; returns once the reply says it was said."""
    sent = await fake.send_interaction("say", {"text": text}, user=ALICE)
    await fake.wait_for(
        lambda: [f for f in fake.followups_to(sent) if f.content and "Said:" in f.content],
        timeout_s=40,
        what=f"/say {text!r} said",
    )
    return sent


CHANNEL = int(VOICE_CHANNEL_ID)
APPEND = davey.ProposalsOperationType.append


def member(user_id: str, sender: ExternalSender) -> davey.DaveSession:
    session = davey.DaveSession(1, int(user_id), CHANNEL)
    session.set_external_sender(sender.package())
    return session


def test_external_proposals_let_two_davey_members_share_a_group() -> None:
    sender = ExternalSender()
    bot, alice = member(BOT.id, sender), member(ALICE.id, sender)
    alice_kp = alice.get_serialized_key_package()
    assert key_package_identity(alice_kp) == int(ALICE.id).to_bytes(8, "big")

    add = sender.add(group_id(CHANNEL), 0, alice_kp)
    result = bot.process_proposals(APPEND, proposals_payload([add])[1:])
    assert result is not None and result.welcome is not None
    commit, welcome = split_commit_welcome(result.commit + result.welcome)
    assert (commit, welcome) == (result.commit, result.welcome) and welcome is not None
    bot.process_commit(commit)
    alice.process_welcome(welcome)
    assert bot.ready and alice.ready and bot.epoch == alice.epoch == 1
    frame = b"\xfc" + bytes(range(60))
    assert alice.decrypt(int(BOT.id), davey.MediaType.audio, bot.encrypt_opus(frame)) == frame

    # the bot again, with a new key: alice commits removing its old leaf (0) and adding it
    again = member(BOT.id, sender)
    epoch = int(alice.epoch or 0)
    proposals = [
        sender.remove(group_id(CHANNEL), epoch, 0),
        sender.add(group_id(CHANNEL), epoch, again.get_serialized_key_package()),
    ]
    result = alice.process_proposals(APPEND, proposals_payload(proposals)[1:])
    assert result is not None and result.welcome is not None
    alice.process_commit(result.commit)
    again.process_welcome(result.welcome)
    assert again.ready and again.epoch == alice.epoch == 2
    assert sorted(again.get_user_ids()) == sorted([BOT.id, ALICE.id])
    assert alice.decrypt(int(BOT.id), davey.MediaType.audio, again.encrypt_opus(frame)) == frame


@pytest.mark.parametrize("tamper", ["signature", "epoch", "sender key"])
def test_a_proposal_that_is_not_the_external_senders_is_refused(tamper: str) -> None:
    sender = ExternalSender()
    bot = member(BOT.id, sender)
    kp = member(ALICE.id, sender).get_serialized_key_package()
    signer = ExternalSender() if tamper == "sender key" else sender
    add = bytearray(signer.add(group_id(CHANNEL), 1 if tamper == "epoch" else 0, kp))
    if tamper == "signature":
        add[-5] ^= 0x01  # inside the DER signature's s value
    with pytest.raises(Exception, match=r"(?i)process|verif|signature|epoch"):
        bot.process_proposals(APPEND, proposals_payload([bytes(add)])[1:])


@pytest.mark.parametrize(
    ("value", "encoded"),  # RFC 9420 §2.1.2's examples
    [(37, "25"), (15_293, "7bbd"), (494_878_333, "9d7f3e7d")],
)
def test_varints_are_rfc_9420s(value: int, encoded: str) -> None:
    assert varint(value).hex() == encoded
    assert MlsReader(bytes.fromhex(encoded)).varint() == value


def test_a_vector_too_long_for_mls_is_refused() -> None:
    with pytest.raises(ValueError, match="over 2\\^30"):
        varint(1 << 30)


def test_a_truncated_commit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="MLS data ends"):
        split_commit_welcome(b"\x00\x01\x00\x01\x08" + b"\x00" * 3)


def voice_of(bot: OyezBot) -> discord.VoiceClient:
    guild = bot.get_guild(int(GUILD_ID))
    assert guild is not None and isinstance(guild.voice_client, discord.VoiceClient)
    return guild.voice_client


@DAVE_ON
async def test_say_is_heard_end_to_end_encrypted(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    await say(fake_discord, FIRST)
    voice = fake_discord.voice
    assert voice.errors == []
    (session,) = voice.sessions
    assert session.dave is not None and session.dave.version == 1
    assert session.dave.key_packages == 1 and len(session.dave.executed) == 1
    frames = voice.voice_frames()
    assert frames and all(p.e2ee for p in frames)
    call = voice.dave.calls[session.dave.channel_id]
    state = voice_of(oyez_bot)._connection
    assert state.dave_session is not None
    assert state.dave_session.voice_privacy_code == call.members[int(ALICE.id)].voice_privacy_code
    (run,) = runs(voice.packets)
    assert word_error_rate(FIRST, heard(run, transcriber)) <= 0.2


@DAVE_ON
async def test_a_member_without_dave_downgrades_the_call_and_speech_goes_on(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    voice = fake_discord.voice
    long = await fake_discord.send_interaction("say", {"text": LONG}, user=ALICE)
    await fake_discord.wait_for(lambda: len(voice.voice_frames()) > 25, what="speech")
    (session,) = voice.sessions
    dave = session.dave
    assert dave is not None
    assert await voice.downgrade() == 1  # op 21, protocol version 0
    await fake_discord.wait_for(lambda: dave.version == 0, what="op 22")
    await fake_discord.wait_for(
        lambda: [f for f in fake_discord.followups_to(long) if "Said:" in (f.content or "")],
        timeout_s=40,
        what="the long /say said",
    )
    (run,) = runs(voice.packets)
    flags = [p.e2ee for p in run]
    switch = flags.index(False)
    assert switch > 25 and not any(flags[switch:])  # encrypted, then plain to the end
    assert word_error_rate(LONG, heard(run, transcriber)) <= 0.25
    assert voice_of(oyez_bot)._connection.dave_downgraded

    # the member without DAVE leaves: a new group (op 24, epoch 1), encrypted again
    assert await voice.upgrade() == 1
    await fake_discord.wait_for(lambda: len(dave.executed) == 3, what="the upgrade")
    await say(fake_discord, SECOND)
    assert dave.version == 1 and dave.key_packages == 2
    second = runs(voice.packets)[-1]
    assert all(p.e2ee for p in second)
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2
    assert voice.errors == []


@DAVE_ON
async def test_members_joining_and_leaving_rekey_the_call_and_each_member_hears_the_bot(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    voice = fake_discord.voice
    await say(fake_discord, FIRST)
    (session,) = voice.sessions
    dave = session.dave
    assert dave is not None
    call = voice.dave.calls[dave.channel_id]
    bot, alice = int(BOT.id), int(ALICE.id)
    assert call.leaves == [bot, alice]

    assert await voice.member_joins(BOB) == 1  # op 27 Add: the bot commits and welcomes bob
    await fake_discord.wait_for(lambda: len(dave.executed) == 2, what="bob's transition")
    heard_by_alice = call.decrypted[alice]
    await say(fake_discord, SECOND)
    assert call.leaves == [bot, alice, BOB]
    second = runs(voice.packets)[-1]
    assert all(p.e2ee for p in second)
    assert call.decrypted[BOB] >= len(second) and call.decrypted[alice] > heard_by_alice
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2

    # the bot's voice session ends: it comes back into the group of alice and bob (op 30)
    await voice.drop_connections(4006)
    await fake_discord.wait_for(
        lambda: len(voice.sessions) == 2 and voice_of(oyez_bot).is_connected(), what="rejoined"
    )
    again = voice.sessions[-1].dave
    assert again is not None
    heard_by_bob = call.decrypted[BOB]
    await say(fake_discord, THIRD)
    assert call.leaves == [bot, alice, BOB]  # its old leaf removed, the new one in its place
    third = runs(voice.packets)[-1]
    assert all(p.e2ee for p in third) and call.decrypted[BOB] - heard_by_bob >= len(third)
    assert word_error_rate(THIRD, heard(third, transcriber)) <= 0.2

    assert await voice.member_leaves(BOB) == 1  # op 27 Remove: the bot commits
    await fake_discord.wait_for(lambda: len(again.executed) == 2, what="bob's removal")
    await say(fake_discord, FIRST)
    assert call.leaves == [bot, alice, None] and BOB not in call.members
    last = runs(voice.packets)[-1]
    assert all(p.e2ee for p in last)
    assert word_error_rate(FIRST, heard(last, transcriber)) <= 0.2
    state = voice_of(oyez_bot)._connection
    assert state.dave_session is not None and state.dave_session.epoch == 4
    assert call.members[alice].epoch == 4
    assert sorted(state.dave_session.get_user_ids()) == sorted([BOT.id, ALICE.id])
    assert voice.errors == []


@DAVE_ON
async def test_an_invalid_commit_gets_the_bot_re_added_and_speech_encrypted(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    voice = fake_discord.voice
    voice.dave.spoil_next_commit = True  # the first op 29 cannot be processed
    await say(fake_discord, FIRST)
    (session,) = voice.sessions
    dave = session.dave
    assert dave is not None
    (invalid,) = dave.invalid  # op 31 for the spoilt transition
    assert invalid["transition_id"] not in dave.executed
    assert dave.key_packages == 2  # then a new key package, and a welcome (op 30)
    assert len(dave.executed) == 1 and dave.version == 1
    call = voice.dave.calls[dave.channel_id]
    assert call.leaves == [int(BOT.id), int(ALICE.id)]  # its first leaf removed, then re-added
    state = voice_of(oyez_bot)._connection
    assert state.dave_session is not None
    assert call.members[int(ALICE.id)].epoch == state.dave_session.epoch == 2
    (run,) = runs(voice.packets)
    assert all(p.e2ee for p in run)
    assert word_error_rate(FIRST, heard(run, transcriber)) <= 0.2
    assert voice.errors == []


@DAVE_ON
async def test_a_group_that_never_forms_delays_the_connection_then_speech_goes_out_plain(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connection, "DAVE_READY_TIMEOUT_S", 0.5)
    voice = fake_discord.voice
    voice.dave.withhold_proposals = True
    await say(fake_discord, FIRST)
    (session,) = voice.sessions
    assert session.dave is not None and session.dave.key_packages == 1
    assert not session.dave.executed
    assert "without end-to-end encryption" in caplog.text
    assert voice_of(oyez_bot).is_connected()
    (run,) = runs(voice.packets)
    assert not any(p.e2ee for p in run)
    assert word_error_rate(FIRST, heard(run, transcriber)) <= 0.2


@pytest.mark.parametrize("identify", [{}, {"max_dave_protocol_version": 0}])
async def test_a_client_without_dave_is_closed_4017(identify: dict[str, object]) -> None:
    async with (
        FakeDiscord(dave=True) as fake,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://{fake.voice.endpoint}/?v=8") as ws,
    ):
        hello = await ws.receive_json()
        assert hello["op"] == 8
        d = {"server_id": GUILD_ID, "user_id": BOT.id, "session_id": "s", "token": "t"}
        await ws.send_json({"op": 0, "d": d | identify})
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4017
    assert fake.voice.sessions == []
