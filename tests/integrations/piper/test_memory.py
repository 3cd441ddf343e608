"""Piper's memory stays bounded after long texts (issue #14: one 988-character message without a
sentence break took ``oyez run`` from 248 MiB to 870 MiB for good), measured in a process of its
own: RSS is per process. ``bench/memory.py`` measures 100 texts against the old code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

#: The goal of issue #14: RSS after long texts ≤ RSS after one short sentence + this.
GROWTH_MIB = 250

CHILD = """
import asyncio, json, sys
from pathlib import Path
from bot.ops import config
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def main():
    settings = config.load(data_dir=Path(sys.argv[1]), cache={"enabled": False})
    pipeline = SpeechPipeline(settings)
    await pipeline.speak(SpeechRequest(text="Hello there."))
    short = rss()
    for text in sys.argv[2:]:
        await pipeline.speak(SpeechRequest(text=text))
    print(json.dumps({"short": short, "after": rss()}))
    await pipeline.aclose()

asyncio.run(main())
"""


def test_long_texts_without_a_break_leave_memory_bounded(tmp_path: Path) -> None:
    words = "the bins go out tonight and the recycling goes out tomorrow morning before eight"
    text = " ".join([words] * 13)[:1000].rsplit(" ", 1)[0]  # max_text_length, no break at all
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data"), text, text],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth = figures["after"] - figures["short"]
    assert growth <= GROWTH_MIB, figures  # before: +1,600 MiB
