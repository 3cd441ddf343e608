"""Dropped, moved and disconnected voice connections, with the real discord.py client against the
simulated Discord: what the voice server hears after each.

Discord's protocol (https://discord.com/developers/docs/topics/voice-connections, "Resuming
Voice Connection"), which the simulated voice server follows:

- close code 4015 (voice server crashed): the client resumes on a new websocket with RESUME
  (op 7) and gets RESUMED (op 9); the session, its SSRC and secret key carry on. discord.py
  2.7.1 cannot do this by itself: it re-sends gateway op 4, waits for voice updates that do not
  move its state machine while it is still "connected", would then wait for a
  SESSION_DESCRIPTION that a resume never sends, and leaves the channel after its timeout.
  Oyez's :class:`~integrations.discord.connection.ResumingVoiceClient` resumes as documented, and
  starts over when the resume is refused; these tests fail with a plain ``VoiceClient``;
- other codes, e.g. 4006 (session no longer valid): discord.py itself leaves and joins again
  through the gateway (op 4) and identifies a new voice session, but its UDP reader thread may
  still sit in ``select()`` on the closed socket (up to 30 s) and miss the new IP discovery
  answer, so the reconnect times out; Oyez's client gives each socket its own reader. Oyez keeps
  the guild's player, its queue and the utterance playing across the reconnect;
- moved or disconnected by a moderator: moved, the bot connects anew in the other channel and
  the next ``/say`` brings it back to the caller's; disconnected (VOICE_STATE_UPDATE without a
  channel, websocket closed 4014), the player is dropped and the next request joins again.

Each test runs twice: DAVE declined, and with DAVE end-to-end encryption, where every voice frame
after the reconnect must still arrive end-to-end encrypted (decrypted by the call's other member).
"""

from __future__ import annotations

import discord
import pytest

from integrations.discord.bot import OyezBot
from integrations.discord.player import GuildPlayer
from tests.fakes.discord import (
    ALICE,
    BOT,
    GUILD_ID,
    LOUNGE_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
)
from tests.fakes.discord.fixtures import DAVE_BOTH, fake_discord, oyez_bot  # noqa: F401
from tests.fakes.discord.listening import heard, runs
from tests.fakes.discord.server import SentInteraction
from tests.fakes.discord.voice import RtpPacket, VoiceSession
from tests.support.asr import Transcriber, word_error_rate

pytestmark = DAVE_BOTH

FIRST = "The washing machine has finished."
SECOND = "Someone is at the front door."
LONG = (
    "This announcement is long on purpose: it talks about the weather, the garden, the bins "
    "and the cat, so that the connection can drop while it is being said."
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


def assert_encrypted(fake: FakeDiscord, frames: list[RtpPacket]) -> None:
    """Every voice frame came end-to-end encrypted when DAVE is on, none when it is off."""
    assert frames
    dave = fake.voice.dave_protocol_version > 0
    assert [p.seq for p in frames if p.e2ee != dave] == []
    assert fake.voice.errors == []


def assert_welcomed(session: VoiceSession) -> None:
    """Under DAVE, a new voice session joined the call's group anew (the other member committed
    and welcomed it, op 30) and that transition was executed."""
    if session.dave is not None:
        assert session.dave.key_packages == 1 and len(session.dave.executed) == 1
        assert session.dave.version == 1


def player_of(bot: OyezBot) -> GuildPlayer:
    return bot.voice.players[int(GUILD_ID)]


def voice_of(bot: OyezBot) -> discord.VoiceClient:
    guild = bot.get_guild(int(GUILD_ID))
    assert guild is not None and isinstance(guild.voice_client, discord.VoiceClient)
    return guild.voice_client


async def connected_again(fake: FakeDiscord, bot: OyezBot, sessions: int) -> VoiceSession:
    """Wait for the ``sessions``-th voice session to be set up and the bot connected on it."""
    await fake.wait_for(
        lambda: len(fake.voice.sessions) == sessions and fake.voice.sessions[-1].mode,
        timeout_s=20,
        what=f"voice session {sessions}",
    )
    await fake.wait_for(lambda: voice_of(bot).is_connected(), what="the bot connected again")
    return fake.voice.sessions[-1]


async def test_a_crashed_voice_server_is_resumed(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    await say(fake_discord, FIRST)
    (session,) = fake_discord.voice.sessions
    assert session.identify is not None
    last_seq = session.seq
    player = player_of(oyez_bot)
    joins = fake_discord.voice_state_updates()

    assert await fake_discord.voice.drop_connections(4015) == 1
    await fake_discord.wait_for(
        lambda: session.resumes and not session.closed, timeout_s=10, what="RESUME (op 7)"
    )
    await fake_discord.wait_for(lambda: voice_of(oyez_bot).is_connected(), what="resumed")
    await say(fake_discord, SECOND)

    (resume,) = session.resumes
    assert {k: resume[k] for k in ("server_id", "session_id", "token")} == {
        k: session.identify[k] for k in ("server_id", "session_id", "token")
    }
    assert resume["seq_ack"] == last_seq  # the last message the client got before the crash
    assert fake_discord.voice.sessions == [session]  # resumed: no new IDENTIFY
    if session.dave is not None:  # and the same MLS group: no new key package, no transition
        assert session.dave.key_packages == 1 and len(session.dave.executed) == 1
    assert fake_discord.voice_state_updates() == joins  # and no gateway op 4 round
    assert player_of(oyez_bot) is player
    first, second = runs(fake_discord.voice.packets)
    assert_encrypted(fake_discord, fake_discord.voice.voice_frames())
    assert {p.ssrc for p in second} == {session.ssrc}  # same SSRC and key: it decrypted
    assert word_error_rate(FIRST, heard(first, transcriber)) <= 0.2
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2


@pytest.mark.parametrize(
    ("code", "resumable", "resume_tried"),
    [
        (4015, False, True),  # a RESUME is tried (op 7), refused with 4006: a new session
        (4006, None, False),  # the session is no longer valid: discord.py starts over at once
    ],
    ids=["refused-resume", "ended-session"],
)
async def test_a_session_that_cannot_resume_starts_anew_and_the_next_say_is_heard(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
    code: int,
    resumable: bool | None,
    resume_tried: bool,
) -> None:
    await say(fake_discord, FIRST)
    player = player_of(oyez_bot)
    joins = len(fake_discord.voice_state_updates())

    await fake_discord.voice.drop_connections(code, resumable=resumable)
    new = await connected_again(fake_discord, oyez_bot, sessions=2)
    await say(fake_discord, SECOND)

    old = fake_discord.voice.sessions[0]
    assert len(old.resumes) == 0  # never resumed
    assert bool(fake_discord.voice.ops_named(7)) is resume_tried
    after = fake_discord.voice_state_updates()[joins:]
    assert [str(d["channel_id"]) for d in after] == ["None", VOICE_CHANNEL_ID]  # left, joined
    assert player_of(oyez_bot) is player
    second = runs(fake_discord.voice.packets)[-1]
    assert_encrypted(fake_discord, fake_discord.voice.voice_frames())
    assert_welcomed(new)
    assert {p.ssrc for p in second} == {new.ssrc} and new.ssrc != old.ssrc
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2


@pytest.mark.usefixtures("oyez_bot")
async def test_speech_cut_by_a_drop_finishes_after_the_reconnect(
    fake_discord: FakeDiscord,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    long = await fake_discord.send_interaction("say", {"text": LONG}, user=ALICE)
    await fake_discord.wait_for(lambda: len(fake_discord.voice.voice_frames()) > 25, what="speech")
    queued = await fake_discord.send_interaction("say", {"text": SECOND}, user=ALICE)
    await fake_discord.wait_for(
        lambda: [f for f in fake_discord.followups_to(queued) if "Queued" in (f.content or "")],
        what="the second /say queued",
    )
    await fake_discord.voice.drop_connections(4006)
    await fake_discord.wait_for(
        lambda: [f for f in fake_discord.followups_to(queued) if "Said:" in (f.content or "")],
        timeout_s=40,
        what="the queued /say said",
    )
    reply = [f.content for f in fake_discord.followups_to(long) if f.content][-1]
    assert reply is not None and reply.startswith("🔊 Said:")

    old, new = fake_discord.voice.sessions
    frames = fake_discord.voice.voice_frames()
    before = [p for p in frames if p.ssrc == old.ssrc]
    after = [p for p in frames if p.ssrc == new.ssrc]
    assert before and after  # the long one began before the drop and went on after it
    long_run, second = runs([p for p in fake_discord.voice.packets if p.ssrc == new.ssrc])
    assert_encrypted(fake_discord, fake_discord.voice.voice_frames())
    assert word_error_rate(LONG, heard(before + long_run, transcriber)) <= 0.25
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2


async def test_moved_by_a_moderator_the_bot_comes_back_to_speak(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    await say(fake_discord, FIRST)
    await fake_discord.move_member(BOT, LOUNGE_CHANNEL_ID)
    await connected_again(fake_discord, oyez_bot, sessions=2)
    assert voice_of(oyez_bot).channel.id == int(LOUNGE_CHANNEL_ID)

    await say(fake_discord, SECOND)  # alice is in Voice: the bot moves back there
    assert voice_of(oyez_bot).channel.id == int(VOICE_CHANNEL_ID)
    assert str(fake_discord.voice_state_updates()[-1]["channel_id"]) == VOICE_CHANNEL_ID
    second = runs(fake_discord.voice.packets)[-1]
    assert_encrypted(fake_discord, fake_discord.voice.voice_frames())
    assert {p.ssrc for p in second} == {fake_discord.voice.sessions[-1].ssrc}
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2


async def test_disconnected_by_a_moderator_the_next_say_joins_again(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    await say(fake_discord, FIRST)
    old_player = player_of(oyez_bot)
    await fake_discord.move_member(BOT, None)
    await fake_discord.wait_for(lambda: not oyez_bot.voice.players, what="the player dropped")
    await fake_discord.wait_for(lambda: not oyez_bot.voice_clients, what="voice cleaned up")

    await say(fake_discord, SECOND)
    assert player_of(oyez_bot) is not old_player
    assert str(fake_discord.voice_state_updates()[-1]["channel_id"]) == VOICE_CHANNEL_ID
    new = fake_discord.voice.sessions[-1]
    assert len(fake_discord.voice.sessions) == 2
    second = runs(fake_discord.voice.packets)[-1]
    assert_encrypted(fake_discord, fake_discord.voice.voice_frames())
    assert_welcomed(new)
    assert {p.ssrc for p in second} == {new.ssrc}
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2
