"""One Oyez process of a cluster test: its own pipeline and data folder, the shared engine.

``python -m tests.support.cluster_worker '<json>'`` with ``{"settings": {...}, "requests": N,
"guild": "g1", "start_at": <time.time() to start at>}`` (and optionally ``"provider"``,
default ``segmind``, and ``"text"``, default ``"Request {i}."``): loads the settings (as
overrides of :func:`bot.ops.config.load`), opens the engine they name, waits for ``start_at`` so
that every process starts at once, sends the N strict (no fallback) requests at once and prints
one JSON line: ``{"spoken": n, "refused": [the BudgetExceeded / InsufficientCredits messages],
"failed": [any other error]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bot.errors import BudgetExceeded, InsufficientCredits
from bot.ops import config
from bot.ops.engine import Engine
from bot.providers.dispatch import Dispatcher
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline


async def run(job: dict[str, Any]) -> dict[str, Any]:
    settings = config.load(**job["settings"])
    outcome: dict[str, Any] = {"spoken": 0, "refused": [], "failed": []}
    async with await Engine.open(settings.engine) as engine:
        books = engine.books(settings.data_dir)
        dispatcher = Dispatcher(settings, books, engine.limiter_factory())
        pipeline = SpeechPipeline(settings, dispatcher=dispatcher)
        if not engine.embedded:  # as oyez run: queued jobs recorded for another to resume
            pipeline.registry.jobs = engine.queued_jobs()
            pipeline.cache_factory = engine.audio_cache

        async def one(i: int) -> None:
            text = job.get("text", "Request {i}.").format(i=i)
            provider = job.get("provider", "segmind")
            request = SpeechRequest(
                text=text, provider=provider, guild=job["guild"], fallback=False
            )
            try:
                await pipeline.speak(request)
            except (BudgetExceeded, InsufficientCredits) as exc:
                outcome["refused"].append(str(exc))
            except Exception as exc:
                outcome["failed"].append(f"{type(exc).__name__}: {exc}")
            else:
                outcome["spoken"] += 1

        try:
            await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
            await asyncio.gather(*(one(i) for i in range(job["requests"])))
        finally:
            await pipeline.aclose()
    return outcome


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
