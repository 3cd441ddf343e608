"""Together's streamed speech: server-sent events whose ``data`` is a JSON object carrying base64
PCM in ``delta`` (current docs) or ``b64`` (OpenAPI spec, SDK), ending with ``data: [DONE]``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp is imported with the first request (bot/providers/http.py)
    import aiohttp

from bot.errors import SynthesisFailed
from bot.providers.http import error_text

__all__ = ["server_sent_data", "speech_pcm"]


async def server_sent_data(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event as it arrives (WHATWG HTML, "server-sent events").

    Lines of one event's ``data`` are joined with newlines; comments and other fields (``event``,
    ``id``, ``retry``) are skipped. Reads what has arrived rather than whole lines, so an event of
    any size is accepted.
    """
    pending = b""
    data: list[str] = []
    async for piece in body.iter_any():
        *lines, pending = (pending + piece).split(b"\n")
        for line in lines:
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if not text:  # a blank line ends the event
                if data:
                    yield "\n".join(data)
                    data = []
            elif not text.startswith(":"):
                field, _, value = text.partition(":")
                if field == "data":
                    data.append(value.removeprefix(" "))
    tail = pending.rstrip(b"\r").decode("utf-8", "replace")
    if tail.startswith("data:"):
        data.append(tail.removeprefix("data:").removeprefix(" "))
    if data:
        yield "\n".join(data)


async def speech_pcm(
    response: aiohttp.ClientResponse, provider: str, model: str
) -> AsyncIterator[bytes]:
    """The PCM of each speech event of a streamed ``/v1/audio/speech`` answer, until ``[DONE]``.

    Raises :class:`SynthesisFailed` (as ``provider``) for a body that is not server-sent events,
    an unreadable or error event, audio that is not base64, or a stream ending without [DONE].
    """
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("text/event-stream"):
        raise SynthesisFailed(
            provider, f"expected server-sent events, got {content_type!r}", model=model
        )
    async for data in server_sent_data(response.content):
        if data.strip() == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise SynthesisFailed(provider, "unreadable stream event", model=model)
        if "error" in event:
            raise SynthesisFailed(
                provider, f"the stream failed: {error_text(data.encode())}", model=model
            )
        audio = event.get("delta") if isinstance(event.get("delta"), str) else event.get("b64")
        if not isinstance(audio, str):
            continue  # an event without audio (a status, a "done" marker) plays nothing
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise SynthesisFailed(
                provider, "a stream event's audio is not base64", model=model
            ) from None
        yield pcm
    raise SynthesisFailed(
        provider, "the stream ended without data: [DONE]; the audio is incomplete", model=model
    )
