"""Audio one process made (real Piper, in a worker process) is a cache hit in another: the
cache's index in the engine (a real Redis), its files in one folder both mount. The hits come
back within 50 ms (p50), no provider called."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bot.ops import config
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.providers.dispatch import Dispatcher
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

SENTENCES = 10
TEXT = "The bins go out tonight, number {i}."


async def test_audio_made_in_one_process_is_a_fast_hit_in_another(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    shared = tmp_path / "volume" / "cache"
    # (the suite's environment turns the cache off: on here, in both processes)
    overrides: dict[str, Any] = {
        "cache": {"enabled": True, "dir": str(shared)},
        "engine": {"url": redis_url},
    }
    job = {
        "settings": {"data_dir": str(tmp_path / "maker")} | overrides,
        "requests": SENTENCES,
        "guild": "g1",
        "start_at": 0,
        "provider": "piper",
        "text": TEXT,
    }
    maker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.cluster_worker",
        json.dumps(job),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(maker.communicate(), timeout=180)
    assert maker.returncode == 0, err.decode(errors="replace")[-2000:]
    assert json.loads(out.decode().splitlines()[-1])["spoken"] == SENTENCES
    settings = config.load(data_dir=tmp_path / "player", **overrides)
    async with await Engine.open(EngineSettings(url=redis_url)) as engine:
        pipeline = SpeechPipeline(settings, dispatcher=Dispatcher(settings))
        pipeline.cache_factory = engine.audio_cache
        waits, cached = [], []
        try:
            for i in range(SENTENCES):
                request = SpeechRequest(text=TEXT.format(i=i), provider="piper", fallback=False)
                started = time.perf_counter()
                spoken = await pipeline.speak(request)
                waits.append(time.perf_counter() - started)
                cached.append(spoken.cached)
            stats = await pipeline.cache.stats()
        finally:
            await pipeline.aclose()
    assert cached == [True] * SENTENCES
    assert (stats.entries, stats.hits) == (SENTENCES, SENTENCES)
    assert not (tmp_path / "player" / "cache").exists()  # nothing of its own
    assert statistics.median(waits) <= 0.050, waits
