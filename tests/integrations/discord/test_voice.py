"""Oyez's player and Opus pass-through in a real discord.py voice connection (simulated Discord):
what the voice server receives is checked frame by frame and by listening."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import discord

from bot.ops import config
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.audio import VoiceClientOutput
from integrations.discord.player import GuildPlayer, QueuedItem
from tests.fakes.discord import VOICE_CHANNEL_ID, FakeDiscord, client_options, decode_opus, running
from tests.fakes.discord.fixtures import fake_discord  # noqa: F401
from tests.fakes.discord.voice import RtpPacket
from tests.support.asr import Transcriber, word_error_rate

FIRST = "The washing machine has finished."
SECOND = "Someone is at the front door."


def segments(packets: list[RtpPacket]) -> list[list[RtpPacket]]:
    """Split received frames at the silence frames discord.py sends after each play."""
    runs: list[list[RtpPacket]] = [[]]
    for packet in packets:
        if packet.is_silence:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(packet)
    return [run for run in runs if run]


async def play_through(
    fake: FakeDiscord, tmp_path: Path, texts: list[str], *, skip_after_s: float | None = None
) -> list[Utterance]:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    client = discord.Client(intents=discord.Intents.default(), **client_options())
    played: list[Utterance] = []
    all_done = asyncio.Event()

    async def on_done(item: QueuedItem, utterance: Utterance | None, error: object) -> None:  # noqa: ARG001 - GuildPlayer's on_done signature
        assert error is None, error
        assert utterance is not None
        played.append(utterance)
        if len(played) == len(texts):
            all_done.set()

    try:
        async with running(client):
            channel = client.get_channel(int(VOICE_CHANNEL_ID))
            assert isinstance(channel, discord.VoiceChannel)
            voice: discord.VoiceClient = await channel.connect(timeout=10)
            segments = functools.partial(pipeline.speak_sentences, live=True)  # as the bot plays
            player = GuildPlayer(VoiceClientOutput(voice), segments, on_done=on_done)
            for text in texts:
                player.enqueue(SpeechRequest(text=text))
            if skip_after_s is not None:
                await fake.wait_for(lambda: fake.voice.voice_frames(), what="first frame")
                await asyncio.sleep(skip_after_s)
                assert player.skip()
            async with asyncio.timeout(60):
                await all_done.wait()
            await player.close()
            await voice.disconnect()
    finally:
        await pipeline.aclose()
    return played


async def test_two_utterances_play_in_order_without_overlap(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    played = await play_through(fake_discord, tmp_path, [FIRST, SECOND])
    runs = segments(fake_discord.voice.packets)
    assert len(runs) == 2
    for run, utterance, text in zip(runs, played, (FIRST, SECOND), strict=True):
        assert abs(len(run) * 0.020 - utterance.duration_s) <= 0.05 * utterance.duration_s
        pcm = decode_opus([p.opus for p in run])
        mono = pcm.mean(axis=1)[::3]  # 48 kHz → 16 kHz for the recogniser
        assert word_error_rate(text, transcriber.transcribe_samples(mono)) <= 0.2
    # one after the other: the second starts after the first's last frame
    assert runs[1][0].time >= runs[0][-1].time
    seqs = [p.seq for p in fake_discord.voice.packets]
    assert seqs == sorted(seqs)


async def test_skip_cuts_the_playing_utterance(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    long_text = (
        "This announcement is long on purpose: it goes on and on about the weather, "
        "the garden, the bins and the cat, so that there is time to skip it."
    )
    played = await play_through(fake_discord, tmp_path, [long_text, SECOND], skip_after_s=1.0)
    runs = segments(fake_discord.voice.packets)
    assert len(runs) == 2
    assert len(runs[0]) * 0.020 < played[0].duration_s / 2  # cut early
    assert abs(len(runs[1]) * 0.020 - played[1].duration_s) <= 0.05 * played[1].duration_s
