"""``oyez`` in a child process that reaches the simulated Discord's voice server:
``python -m tests.support.discord_process run --role gateway``.

discord.py hard-codes the voice websocket as ``wss://{endpoint}``; the simulated voice server
speaks plain ``ws://``. In-process tests wrap one client's ``ws_connect``
(:func:`tests.fakes.discord.client.attach`); here every client's is, before the CLI runs.
Only loopback URLs are rewritten.
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import discord.http

from bot.cli import main

__all__: list[str] = []

_original = discord.http.HTTPClient.ws_connect


async def _ws_connect(
    self: discord.http.HTTPClient, url: str, *, compress: int = 0
) -> aiohttp.ClientWebSocketResponse:
    if url.startswith(("wss://127.0.0.1:", "wss://localhost:")):
        url = "ws://" + url.removeprefix("wss://")
    return await _original(self, url, compress=compress)


def _patch() -> Any:
    discord.http.HTTPClient.ws_connect = _ws_connect  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch()
    raise SystemExit(main(sys.argv[1:]))
