"""Gateway shards over several processes: 1,000 guilds on 4 shards, run by two real discord.py
``AutoShardedClient`` bots (two shards each, each with its own connection to one Redis),
against the simulated Discord that shards (:mod:`tests.fakes.discord.shards`)."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import discord
import pytest
from discord.gateway import KeepAliveHandler

from bot.announce.model import TargetResult
from bot.errors import ConfigError
from bot.ops import config
from bot.ops.config import DiscordChannel, EngineSettings
from bot.ops.engine import Engine
from bot.service import Service
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.relay import DeliveryWorker
from integrations.discord.service import DiscordFrontEnd, DiscordSink
from integrations.discord.settings import DiscordSettings
from integrations.discord.shards import (
    IdentifyGate,
    ShardedOyezBot,
    close_stray_websockets,
    shard_of,
)
from tests.fakes.discord import client_options, patched_discord, running
from tests.fakes.discord.listening import heard, runs
from tests.fakes.discord.shards import IDENTIFY_WINDOW_S, ShardedDiscord
from tests.support.asr import Transcriber, word_error_rate
from tests.support.discord_process import gateway_process
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

TEXT = "The washing machine has finished."
GUILDS, SHARDS, MAX_CONCURRENCY = 1000, 4, 2
SAID_IN = 50  # guilds picked at random for /say in the two-process test


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"shard_ids": [0]}, "shard_ids needs shard_count"),
        ({"shard_count": 4, "shard_ids": [1, 4]}, r"shard_ids \[4\] out of range: 0 to 3"),
        ({"shard_count": 4, "shard_ids": "0;1"}, "separated by commas"),
        ({"shard_count": 0}, "shard_count"),
    ],
)
def test_wrong_shards_are_named(section: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        DiscordSettings.from_settings(config.load(discord=section))


def test_shard_ids_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_DISCORD__SHARD_COUNT", "4")
    monkeypatch.setenv("OYEZ_DISCORD__SHARD_IDS", "3,1")
    settings = DiscordSettings.from_settings(config.load())
    assert (settings.shard_count, settings.shard_ids) == (4, [1, 3])
    monkeypatch.setenv("OYEZ_DISCORD__SHARD_IDS", "[2]")
    assert DiscordSettings.from_settings(config.load()).shard_ids == [2]


def test_the_shard_of_a_guild_is_discords_formula() -> None:
    # discord-api-docs gateway.mdx §Sharding: (guild_id >> 22) % num_shards
    assert shard_of(197038439483310086, 2) == (197038439483310086 >> 22) % 2
    assert [shard_of(n << 22, 4) for n in range(6)] == [0, 1, 2, 3, 0, 1]


@pytest.fixture
async def engines(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[list[Engine]]:
    opened = [await Engine.open(EngineSettings(url=redis_url)) for _ in range(2)]
    yield opened
    for engine in opened:
        await engine.aclose()


async def test_the_gate_lets_one_identify_per_bucket_per_window(engines: list[Engine]) -> None:
    gates = [IdentifyGate(e.client, "oyez:", window_s=0.4) for e in engines]  # type: ignore[arg-type]
    start = time.monotonic()

    async def passed(gate: IdentifyGate, shard_id: int) -> float:
        await gate.wait(shard_id, max_concurrency=2)
        return time.monotonic() - start

    # shards 0 and 2 share bucket 0; shard 1 is alone in bucket 1
    times = await asyncio.gather(passed(gates[0], 0), passed(gates[1], 2), passed(gates[1], 1))
    first, second = sorted(times[:2])
    assert first < 0.2
    assert second >= 0.4
    assert times[2] < 0.2


async def test_a_sharded_bot_is_built_with_the_gate(tmp_path: Path, engines: list[Engine]) -> None:
    settings = config.load(
        data_dir=tmp_path,
        discord={"token": "MTAwMA.secret-bot-token", "shard_count": 4, "shard_ids": [2, 3]},
        run={"roles": ["gateway"]},
    )
    service = Service(settings, engine=engines[0])
    await service.build()
    try:
        (front_end,) = service.front_ends
        assert isinstance(front_end, DiscordFrontEnd)
        bot = front_end.bot
        assert isinstance(bot, ShardedOyezBot)
        assert (bot.shard_count, bot.shard_ids) == (4, [2, 3])
        assert isinstance(bot.gate, IdentifyGate)
    finally:
        await front_end.stop()
        await service.pipeline.aclose()


@pytest.fixture
async def sharded_discord() -> AsyncIterator[ShardedDiscord]:
    fake = ShardedDiscord(guilds=GUILDS, shard_count=SHARDS, max_concurrency=MAX_CONCURRENCY)
    async with fake:
        with patched_discord(fake):
            yield fake


async def test_a_thousand_guilds_over_four_shards_in_two_processes(
    sharded_discord: ShardedDiscord,
    engines: list[Engine],
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    fake = sharded_discord
    halves = [[0, 1], [2, 3]]
    async with AsyncExitStack() as stack:
        bots: list[ShardedOyezBot] = []
        for n, (engine, shard_ids) in enumerate(zip(engines, halves, strict=True)):
            pipeline = SpeechPipeline(config.load(data_dir=tmp_path / f"process-{n}"))
            stack.push_async_callback(pipeline.aclose)
            assert engine.client is not None
            bot = ShardedOyezBot(
                pipeline,
                DiscordSettings(idle_timeout_s=60, shard_count=SHARDS, shard_ids=shard_ids),
                gate=IdentifyGate(engine.client, engine.settings.key_prefix),
                **client_options(),
            )
            bots.append(bot)
        # both start at once, as two processes of one deployment do
        await asyncio.gather(
            *(stack.enter_async_context(running(bot, timeout_s=60)) for bot in bots)
        )

        assert fake.invalid_sessions == []
        assert sorted(i.shard_id for i in fake.identifies) == [0, 1, 2, 3]
        for bucket in range(MAX_CONCURRENCY):
            times = sorted(i.time for i in fake.identifies if i.shard_id % 2 == bucket)
            assert times[1] - times[0] >= IDENTIFY_WINDOW_S
        # each GUILD_CREATE reached exactly one process: the one running the guild's shard
        assert sorted(fake.guild_creates) == fake.guild_ids
        assert all(len(shards) == 1 for shards in fake.guild_creates.values())
        seen = [{g.id for g in bot.guilds} for bot in bots]
        assert not seen[0] & seen[1]
        assert sorted(seen[0] | seen[1]) == fake.guild_ids
        for bot, shard_ids in zip(bots, halves, strict=True):
            assert {shard_of(g, SHARDS) for g in {g.id for g in bot.guilds}} == set(shard_ids)
        assert [len(fake.sync_calls), fake.sync_calls[0].guild_id] == [1, None]  # shard 0's

        chosen = random.Random(19).sample(fake.guild_ids, 3)
        sent = await asyncio.gather(
            *(fake.send_interaction_in(g, "say", {"text": TEXT}) for g in chosen)
        )
        for interaction in sent:
            await fake.wait_for(
                lambda i=interaction: [  # type: ignore[misc]
                    f for f in fake.followups_to(i) if f.content and "Said:" in f.content
                ],
                timeout_s=60,
                what="the /say reply",
            )
        for guild_id in chosen:
            (run,) = runs(fake.packets_of(guild_id))
            said = heard(run, transcriber)
            lost = len({p.seq for p in run}) - (max(p.seq for p in run) - run[0].seq + 1)
            assert word_error_rate(TEXT, said) <= 0.2, f"{guild_id}: {said!r}, {-lost} lost"


@pytest.fixture
async def small_sharded_discord() -> AsyncIterator[ShardedDiscord]:
    fake = ShardedDiscord(guilds=8, shard_count=SHARDS, max_concurrency=MAX_CONCURRENCY)
    async with fake:
        with patched_discord(fake):
            yield fake


async def test_without_the_gate_two_processes_identify_in_one_bucket_at_once(
    small_sharded_discord: ShardedDiscord,
) -> None:
    """The control: discord.py alone spaces identifies inside one process only, so two
    processes starting together break the bucket, and the simulated Discord refuses it."""
    fake = small_sharded_discord
    clients = [
        discord.AutoShardedClient(
            intents=discord.Intents.none(), shard_count=SHARDS, shard_ids=ids, **client_options()
        )
        for ids in ([0, 1], [2, 3])
    ]
    tasks = [asyncio.create_task(c.start("fake.bot.token")) for c in clients]
    try:
        await fake.wait_for(lambda: fake.invalid_sessions, timeout_s=10, what="an op 9")
    finally:
        for client in clients:
            await client.close()
        for task in tasks:  # discord.py's close leaves a shard still launching retrying
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # and the shard still launching keeps its heartbeat thread, which fails once the
        # loop is closed (in a later test): close it
        stray = [await close_stray_websockets(client) for client in clients]
    assert fake.invalid_sessions[0] % MAX_CONCURRENCY == 0  # shards 0 and 2, both first
    assert sum(stray) >= 1
    await _no_heartbeats_left()


async def _no_heartbeats_left() -> None:
    """Every discord.py gateway heartbeat thread has stopped (within a second)."""
    for _ in range(100):
        alive = [t.name for t in threading.enumerate() if isinstance(t, KeepAliveHandler)]
        if not alive:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"heartbeat threads still running: {alive}")


async def test_a_sharded_bot_closed_while_its_shards_connect_leaves_no_heartbeat(
    small_sharded_discord: ShardedDiscord,
) -> None:
    """Closed while its second shard waits its turn to identify (after HELLO, its heartbeat
    thread running), the bot closes that connection too, and launches no more shards."""
    fake = small_sharded_discord
    bot = ShardedOyezBot(
        SpeechPipeline(config.load()),
        DiscordSettings(shard_count=SHARDS, shard_ids=[0, 2]),  # one bucket: 5 s between
        **client_options(),
    )
    task = asyncio.create_task(bot.start("fake.bot.token"))
    try:
        await fake.wait_for(lambda: fake.identifies, timeout_s=10, what="shard 0's identify")
        await asyncio.sleep(0.5)  # shard 2 connected and waits in before_identify_hook
        await bot.close()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bot.pipeline.aclose()
    await _no_heartbeats_left()
    await asyncio.sleep(0.5)
    assert [i.shard_id for i in fake.identifies] == [0]  # shard 2 never identified


async def test_two_oyez_run_gateway_processes_share_the_shards(
    sharded_discord: ShardedDiscord,
    redis_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    """``oyez run --role gateway`` twice, the shards of each from the environment; /say in
    50 of the 1,000 guilds, picked at random, is heard in all 50 (ASR on a sample)."""
    fake = sharded_discord
    processes = [
        await gateway_process(fake, redis_url, tmp_path / f"process-{n}", SHARDS, ids)
        for n, ids in enumerate(["0,1", "2,3"])
    ]
    try:
        await fake.wait_for(
            lambda: len(fake.guild_creates) == GUILDS and fake.connected_shards() == [0, 1, 2, 3],
            timeout_s=120,
            what="every shard connected",
        )
        await fake.wait_for(lambda: fake.sync_calls, timeout_s=30, what="the commands synced")
        assert fake.invalid_sessions == []
        assert sorted(i.shard_id for i in fake.identifies) == [0, 1, 2, 3]
        assert all(len(shards) == 1 for shards in fake.guild_creates.values())
        chosen = random.Random(1919).sample(fake.guild_ids, SAID_IN)
        started = time.monotonic()
        sent = [await fake.send_interaction_in(g, "say", {"text": TEXT}) for g in chosen]
        await fake.wait_for(
            lambda: all(
                any(f.content and "Said:" in f.content for f in fake.followups_to(i)) for i in sent
            ),
            timeout_s=90,
            what=f"the {SAID_IN} /say replies",
        )
        took_s = time.monotonic() - started
        # heard in each: the voice server received one utterance in every guild
        assert [len(runs(fake.packets_of(g))) for g in chosen] == [1] * SAID_IN
        for guild_id in random.Random(19).sample(chosen, 3):  # and recognised in a sample
            (run,) = runs(fake.packets_of(guild_id))
            assert word_error_rate(TEXT, heard(run, transcriber)) <= 0.2, guild_id
        print(f"/say in {SAID_IN} guilds over two processes: all replied in {took_s:.1f} s")
        assert len(fake.sync_calls) == 1  # only shard 0's process registers the commands
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)
    for n, process in enumerate(processes):
        log = (tmp_path / f"process-{n}" / "oyez.log").read_text()
        assert process.returncode == 0, log[-3000:]
        assert "secret-bot-token" not in log


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def quick_sharded_discord() -> AsyncIterator[ShardedDiscord]:
    fake = ShardedDiscord(guilds=40, shard_count=SHARDS, max_concurrency=SHARDS)
    async with fake:
        with patched_discord(fake):
            yield fake


async def test_an_api_process_relays_discord_announcements_to_the_guilds_shard(
    quick_sharded_discord: ShardedDiscord,
    engines: list[Engine],
    redis_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    """``--role api`` has no bot: its ``discord`` targets go to the process running the
    guild's shard, which speaks them and answers how it went."""
    fake = quick_sharded_discord
    token = "api-token-for-tests-0123"
    async with AsyncExitStack() as stack:
        for n, (engine, shard_ids) in enumerate(zip(engines, [[0, 1], [2, 3]], strict=True)):
            pipeline = SpeechPipeline(config.load(data_dir=tmp_path / f"gateway-{n}"))
            stack.push_async_callback(pipeline.aclose)
            assert engine.client is not None
            discord_settings = DiscordSettings(shard_count=SHARDS, shard_ids=shard_ids)
            bot = ShardedOyezBot(pipeline, discord_settings, **client_options())
            await stack.enter_async_context(running(bot, timeout_s=60))
            here = DiscordSink(bot).speak_here
            worker = DeliveryWorker(engine.client, "oyez:", shard_ids, here, bot.wait_until_ready)
            stack.push_async_callback(_cancelled, asyncio.create_task(worker.serve()))
        settings = config.load(
            data_dir=tmp_path / "api",
            engine={"url": redis_url},
            run={"roles": ["api"]},
            discord={"token": "MTAwMA.secret-bot-token", "shard_count": SHARDS},
            http={"host": "127.0.0.1", "port": 0, "api_token": token},
        )
        api_engine = await Engine.open(settings.engine)
        stack.push_async_callback(api_engine.aclose)
        service = Service(settings, engine=api_engine)
        await service.build()
        assert service.front_ends == []  # no bot in this process
        serving = asyncio.create_task(service.serve())
        stack.push_async_callback(_cancelled, serving)
        while service.server.port is None:  # noqa: ASYNC110 - started by serve()
            await asyncio.sleep(0.01)
        # one guild of each gateway process
        chosen = [next(g for g in fake.guild_ids if shard_of(g, SHARDS) == s) for s in (1, 2)]
        body = {
            "id": "relayed-1",
            "message": TEXT,
            "discord": [{"guild_id": g, "channel_id": g + 2} for g in chosen],
        }
        base = f"http://127.0.0.1:{service.server.port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{base}/announce", json=body) as reply:
                assert reply.status == 202, await reply.text()
            found: dict[str, object] = {}
            for _ in range(600):
                async with session.get(f"{base}/requests/relayed-1") as reply:
                    found = await reply.json()
                if found.get("state") in ("done", "failed"):
                    break
                await asyncio.sleep(0.1)
        assert found["state"] == "done", found
        targets = found["targets"]
        assert isinstance(targets, list)
        assert all(t["ok"] for t in targets), targets
        for guild_id in chosen:
            (run,) = runs(fake.packets_of(guild_id))
            assert word_error_rate(TEXT, heard(run, transcriber)) <= 0.2, guild_id


class _RecordingRelay:
    def __init__(self) -> None:
        self.relayed: list[tuple[DiscordChannel, str]] = []

    async def relay(self, target: object, request: SpeechRequest) -> TargetResult:
        assert isinstance(target, DiscordChannel)
        self.relayed.append((target, request.text))
        return TargetResult(str(target), True, duration_s=1.0)


async def test_a_gateway_relays_the_targets_of_other_processes_shards(
    pipeline: SpeechPipeline,
) -> None:
    settings = DiscordSettings(shard_count=SHARDS, shard_ids=[0, 1])
    bot = ShardedOyezBot(pipeline, settings)
    relay = _RecordingRelay()
    sink = DiscordSink(bot, relay)  # type: ignore[arg-type]
    theirs = DiscordChannel(guild_id=(2 << 22) | 5, channel_id=7)  # shard 2: not this one's
    mine = DiscordChannel(guild_id=(1 << 22) | 5, channel_id=7)  # shard 1: this one's
    try:
        results, _ = await sink.deliver(
            [theirs, mine],
            SpeechRequest(text=TEXT),
            None,  # type: ignore[arg-type]
        )
    finally:
        await bot.close()
    assert relay.relayed == [(theirs, TEXT)]
    assert results[0].ok
    assert (results[1].ok, results[1].error) == (False, "the bot is not in that server")
