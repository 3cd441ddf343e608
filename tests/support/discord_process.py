"""``oyez`` in a child process that reaches the simulated Discord's voice server:
``python -m tests.support.discord_process run --role gateway``, and :func:`gateway_process`
that starts one as a gateway of some shards.

discord.py hard-codes the voice websocket as ``wss://{endpoint}``; the simulated voice server
speaks plain ``ws://``. In-process tests wrap one client's ``ws_connect``
(:func:`tests.fakes.discord.client.attach`); here every client's is, before the CLI runs.
Only loopback URLs are rewritten.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import discord.http

from bot.cli import main

if TYPE_CHECKING:
    from tests.fakes.discord.shards import ShardedDiscord

__all__ = ["gateway_process"]

REPOSITORY = Path(__file__).resolve().parents[2]
#: The bot token the child processes log in with (never to appear in their logs).
TOKEN = "MTAwMA.secret-bot-token"

_original = discord.http.HTTPClient.ws_connect


async def _ws_connect(
    self: discord.http.HTTPClient, url: str, *, compress: int = 0
) -> aiohttp.ClientWebSocketResponse:
    if url.startswith(("wss://127.0.0.1:", "wss://localhost:")):
        url = "ws://" + url.removeprefix("wss://")
    return await _original(self, url, compress=compress)


def _patch() -> Any:
    discord.http.HTTPClient.ws_connect = _ws_connect  # type: ignore[method-assign]


def _environment(
    fake: ShardedDiscord,
    engine_url: str,
    folder: Path,
    shard_count: int,
    shard_ids: str,
    extra: dict[str, str],
) -> dict[str, str]:
    folder.mkdir()
    env = dict(os.environ)  # the test's: no developer's OYEZ_*, Piper without noise
    env.update(
        PYTHONPATH=str(REPOSITORY),
        OYEZ_DATA_DIR=str(folder / "data"),
        OYEZ_ENGINE__URL=engine_url,
        OYEZ_RUN__ROLES="gateway",
        OYEZ_DISCORD__TOKEN=TOKEN,
        OYEZ_DISCORD__API_BASE_URL=fake.api_base,
        OYEZ_DISCORD__GATEWAY_URL=fake.gateway_url,
        OYEZ_DISCORD__SHARD_COUNT=str(shard_count),
        OYEZ_DISCORD__SHARD_IDS=shard_ids,
        OYEZ_DISCORD__IDLE_TIMEOUT_S="60",
        OYEZ_HTTP__HOST="127.0.0.1",
        OYEZ_HTTP__PORT="0",
    )
    env.update(extra)
    return env


async def gateway_process(
    fake: ShardedDiscord,
    engine_url: str,
    folder: Path,
    shard_count: int,
    shard_ids: str,
    **extra: str,
) -> asyncio.subprocess.Process:
    """``oyez run`` as a gateway of ``shard_ids`` (e.g. ``"0,1"``) of ``shard_count``
    against ``fake`` and the engine at ``engine_url``, roles and shards from the
    environment (``extra``: more ``OYEZ_*`` variables); its data in ``folder`` (made here),
    its output in ``folder/oyez.log``."""
    env = _environment(fake, engine_url, folder, shard_count, shard_ids, extra)
    with (folder / "oyez.log").open("wb") as log:  # a pipe left unread would stall it
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.discord_process",
            "run",
            cwd=folder,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


if __name__ == "__main__":
    _patch()
    raise SystemExit(main(sys.argv[1:]))
