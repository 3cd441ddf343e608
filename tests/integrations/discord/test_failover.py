"""A gateway process killed (SIGKILL) and started again: its shards identify again without an
invalid session, and the deliveries queued for its guilds are spoken (or reported failed),
none lost. Real ``oyez run --role gateway`` processes against the sharding simulated Discord,
one real Redis."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.announce.model import TargetResult
from bot.ops.config import DiscordChannel, EngineSettings
from bot.ops.engine import Engine
from bot.speech import SpeechRequest
from integrations.discord.relay import GROUP, RelayedDiscordSink, stream_of
from tests.fakes.discord import patched_discord
from tests.fakes.discord.listening import heard, runs
from tests.fakes.discord.shards import IDENTIFY_WINDOW_S, ShardedDiscord, guild_shard
from tests.support.asr import Transcriber, word_error_rate
from tests.support.discord_process import TOKEN, gateway_process
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

SHARDS = 4
#: Seconds a job a dead process read waits before the restarted one takes it over.
TAKEOVER_S = 2.0
PER_GUILD = 4  # deliveries queued in each of the killed process's guilds before the kill
ORDINALS = ["first", "second", "third", "fourth"]
NAMES = ["apple", "river", "garden", "window"]


def down_text(name: str) -> str:
    """What is relayed to the guild called ``name`` while its gateway process is down."""
    return f"While the bot was away, the {name} server waited."


@pytest.fixture
async def engine(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[Engine]:
    opened = await Engine.open(EngineSettings(url=redis_url))
    yield opened
    await opened.aclose()


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        await asyncio.wait_for(process.wait(), 30)


def _identifies_spaced(fake: ShardedDiscord) -> None:
    assert fake.invalid_sessions == []
    for bucket in range(fake.max_concurrency):
        times = sorted(
            i.time for i in fake.identifies if i.shard_id % fake.max_concurrency == bucket
        )
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= IDENTIFY_WINDOW_S for gap in gaps), (bucket, gaps)


async def test_a_gateway_restarted_at_once_waits_for_the_dead_ones_identify_window(
    redis_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Killed right after its last IDENTIFY and started again at once, the process connects
    within Discord's 5 s window of that IDENTIFY: the lock the dead process took in the
    engine (it outlives it) holds the new one's first IDENTIFY until the window is over."""
    fake = ShardedDiscord(guilds=8, shard_count=SHARDS, max_concurrency=1)  # one bucket
    async with fake:
        with patched_discord(fake):
            first = await gateway_process(fake, redis_url, tmp_path / "first", SHARDS, "0,1")
            try:
                await fake.wait_for(
                    lambda: len(fake.identifies) == 2, timeout_s=60, what="both identifies"
                )
                first.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await first.wait()
                second = await gateway_process(fake, redis_url, tmp_path / "second", SHARDS, "0,1")
                hellos_before = len(fake.hellos)
                try:
                    await fake.wait_for(
                        lambda: len(fake.identifies) == 4, timeout_s=60, what="the identifies"
                    )
                finally:
                    await _stop([second])
            finally:
                await _stop([first])
    last_dead = fake.identifies[1].time
    greeted = fake.hellos[hellos_before - 1 :]  # the restarted process's first connection
    assert killed_at - last_dead < 1.0
    # it was connected and ready to identify inside the dead process's window...
    assert any(t < last_dead + IDENTIFY_WINDOW_S for t in greeted), (greeted, last_dead)
    # ...and identified only after it: no session invalidated
    assert fake.identifies[2].time - last_dead >= IDENTIFY_WINDOW_S
    _identifies_spaced(fake)


async def test_a_gateway_killed_with_deliveries_queued_speaks_them_after_its_restart(
    engine: Engine,
    redis_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    """Two gateway processes (shards 0,1 and 2,3); 20 deliveries relayed to four guilds of
    the second, which is killed while it speaks them, 4 more while it is down; restarted, it
    identifies its shards again without an invalid session, takes the jobs it had read over
    and speaks every one (those cut off by the kill again, whole)."""
    fake = ShardedDiscord(guilds=40, shard_count=SHARDS, max_concurrency=2)
    assert engine.client is not None
    sink = RelayedDiscordSink(
        engine.client,
        engine.settings.key_prefix,
        SHARDS,
        None,  # type: ignore[arg-type]  # warm() is not used here
        timeout_s=90,
        takeover_s=TAKEOVER_S,
    )
    extra = {"OYEZ_DISCORD__RELAY_TAKEOVER_S": str(TAKEOVER_S)}
    async with fake:
        with patched_discord(fake):
            processes = [
                await gateway_process(fake, redis_url, tmp_path / n, SHARDS, ids, **extra)
                for n, ids in (("a", "0,1"), ("b", "2,3"))
            ]
            try:
                results, killed_at, done_before = await _kill_and_restart(
                    fake, sink, redis_url, tmp_path, processes, extra
                )
            finally:
                await _stop(processes)
    chosen = sorted({g for g, _ in results})
    assert len(results) == len(chosen) * (PER_GUILD + 1)  # none lost
    failed = [(g, r) for g, r in results if not r.ok]
    assert failed == [], failed  # every one spoken (the deadline was far)
    _identifies_spaced(fake)
    assert sorted(i.shard_id for i in fake.identifies) == [0, 1, 2, 2, 3, 3]
    for guild_id in chosen:
        after = runs([p for p in fake.packets_of(guild_id) if p.time > killed_at])
        assert len(after) >= PER_GUILD + 1 - done_before[guild_id], guild_id
    # what the restarted process said in one guild: the one sent while it was down among it
    after = runs([p for p in fake.packets_of(chosen[0]) if p.time > killed_at])
    said = [heard(run, transcriber) for run in after]
    assert min(word_error_rate(down_text(NAMES[0]), text) for text in said) <= 0.3, said
    log = (tmp_path / "b-again" / "oyez.log").read_text()
    assert "taking over job" in log
    for folder in ("a", "b", "b-again"):
        assert TOKEN not in (tmp_path / folder / "oyez.log").read_text()


async def _kill_and_restart(
    fake: ShardedDiscord,
    sink: RelayedDiscordSink,
    redis_url: str,  # noqa: F811 - not the fixture here
    tmp_path: Path,
    processes: list[asyncio.subprocess.Process],
    extra: dict[str, str],
) -> tuple[list[tuple[int, TargetResult]], float, dict[int, int]]:
    """Queue, kill the second process while it speaks, queue more, restart it; each
    delivery's guild and result, when it was killed, and how many each guild had done then."""
    await fake.wait_for(
        lambda: fake.connected_shards() == [0, 1, 2, 3], timeout_s=60, what="every shard"
    )
    await asyncio.sleep(1)  # the delivery workers start reading once their bot is ready
    chosen = [
        g for s in (2, 3) for g in [g for g in fake.guild_ids if guild_shard(g, SHARDS) == s][:2]
    ]
    names = dict(zip(chosen, NAMES, strict=True))

    def deliver(guild_id: int, text: str) -> asyncio.Task[tuple[int, TargetResult]]:
        target = DiscordChannel(guild_id=guild_id, channel_id=guild_id + 2)

        async def one() -> tuple[int, TargetResult]:
            return guild_id, await sink.relay(target, SpeechRequest(text=text))

        return asyncio.create_task(one())

    tasks = [
        deliver(g, f"The {ORDINALS[n]} message for the {names[g]} server.")
        for n in range(PER_GUILD)
        for g in chosen
    ]
    streams = [stream_of(sink.prefix, s) for s in (2, 3)]

    async def pending() -> int:
        counts = [await sink.client.xpending(s, GROUP) for s in streams]
        return sum(int(c["pending"]) for c in counts)

    await fake.wait_for(
        lambda: any(runs(fake.packets_of(g)) for g in chosen), timeout_s=60, what="speech"
    )
    assert await pending() >= len(tasks) - 2  # read by the process, not yet answered
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await processes[1].wait()
    done_before = {g: sum(1 for t in tasks if t.done() and t.result()[0] == g) for g in chosen}
    tasks += [deliver(g, down_text(names[g])) for g in chosen]
    processes.append(
        await gateway_process(fake, redis_url, tmp_path / "b-again", SHARDS, "2,3", **extra)
    )
    results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return results, killed_at, done_before
