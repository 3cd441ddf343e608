"""Pointing the real discord.py client at :class:`FakeDiscord`.

Three pieces, all undone when the test ends:

- :func:`patched_discord` sets discord.py's two globals: ``discord.http.Route.BASE`` (REST,
  interaction callbacks and webhooks all build their URLs from it) and
  ``DiscordWebSocket.DEFAULT_GATEWAY``; it restores both on exit. Never call discord.py's
  ``_set_api_version`` after patching: it resets ``Route.BASE``.
- :func:`client_options` are the constructor keywords for a ``Client``/``commands.Bot``: an
  aiohttp connector without TLS verification (created here, so call it inside the event loop)
  and ``guild_ready_timeout=0.1`` so ``on_ready`` is not delayed 2 s.
- :func:`attach` wraps ``client.http.ws_connect``: discord.py hard-codes the voice websocket URL
  as ``wss://{endpoint}/?v=8``, and the fake voice server speaks plain ``ws://``, so
  ``wss://127.0.0.1...`` is rewritten to ``ws://127.0.0.1...`` (the ``wss`` → ``ws`` rewrite
  option, rather than TLS with a throw-away certificate). Only loopback URLs are rewritten.

:func:`running` does all of it for one client: attach, start, wait for ``on_ready``, and close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from tests.fakes.discord.server import FakeDiscord

__all__ = ["FAKE_TOKEN", "attach", "client_options", "patched_discord", "running"]

FAKE_TOKEN = "fake.bot.token"  # the fake accepts any token


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord) -> Iterator[None]:
    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = saved_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway


def client_options() -> dict[str, Any]:
    """Keywords for ``discord.Client``/``commands.Bot`` talking to the fake (inside the loop)."""
    return {
        "connector": aiohttp.TCPConnector(limit=0, ssl=False),
        "guild_ready_timeout": 0.1,
    }


def attach(client: discord.Client) -> None:
    """Make the client's websockets reach the fake's plain ``ws://`` voice server."""
    http = client.http
    original = http.ws_connect

    async def ws_connect(url: str, *, compress: int = 0) -> aiohttp.ClientWebSocketResponse:
        if url.startswith(("wss://127.0.0.1:", "wss://localhost:")):
            url = "ws://" + url.removeprefix("wss://")
        return await original(url, compress=compress)

    http.ws_connect = ws_connect  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running(
    client: discord.Client, *, timeout_s: float = 10.0
) -> AsyncIterator[discord.Client]:
    """Run ``client`` until ``on_ready``, inside :func:`patched_discord` (so it reaches the
    fake); close it after."""
    attach(client)
    task = asyncio.create_task(client.start(FAKE_TOKEN), name="discord client")
    try:
        async with asyncio.timeout(timeout_s):
            while not client.is_ready():
                if task.done():
                    task.result()  # raises what went wrong at login
                    raise RuntimeError("the discord client stopped before on_ready")
                await asyncio.sleep(0.01)
        yield client
    finally:
        for voice_client in list(client.voice_clients):
            with contextlib.suppress(Exception):
                await voice_client.disconnect(force=True)
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
