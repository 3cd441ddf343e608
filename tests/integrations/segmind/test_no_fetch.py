"""Provider options that name URLs (``reference_audio``, ``input_audio``) go to the provider as
they are: Oyez itself never fetches them (they may point anywhere a request's sender chose)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from integrations.segmind.models import CHATTERBOX_SAMPLE, OPENVOICE_SAMPLE
from tests.fakes.segmind import FakeSegmind
from tests.integrations.segmind.test_provider import make_provider, say


@pytest.fixture
async def internal() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(body=b"internal")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


@pytest.mark.parametrize(
    ("model", "option", "path", "sample"),
    [
        ("chatterbox-tts", "reference_audio", "/v1/chatterbox-tts", CHATTERBOX_SAMPLE),
        ("openvoice", "input_audio", "/v2/openvoice", OPENVOICE_SAMPLE),
    ],
)
async def test_url_options_are_passed_on_never_fetched(
    internal: tuple[str, list[str]], model: str, option: str, path: str, sample: str
) -> None:
    base, hits = internal
    url = f"{base}/internal-admin"
    async with FakeSegmind() as fake:
        provider = make_provider(fake)
        try:
            await say(provider, "Hello.", None, model, **{option: url})
        finally:
            await provider.aclose()
        sent = fake.requests_to(path)[0].json
    assert sent is not None
    assert sent[option] == url
    assert sample not in str(sent)
    assert hits == []
