"""Simulated provider servers (Segmind, Together AI, Google Cloud, Amazon Polly,
OpenAI-compatible) for offline tests.

Fixtures live in :mod:`tests.fakes.fixtures`; import them into a conftest or test module::

    from tests.fakes.fixtures import fake_openai, fake_segmind, fake_together
"""

from tests.fakes.audio import Synthesizer, tone_synthesizer
from tests.fakes.base import BilledCall, FakeClock, FakeServer, LoggedRequest, ScriptedResponse
from tests.fakes.google import FakeGoogleTTS
from tests.fakes.openai_speech import FakeOpenAISpeech
from tests.fakes.polly import FakePolly
from tests.fakes.segmind import FakeSegmind
from tests.fakes.together import FakeTogether

__all__ = [
    "BilledCall",
    "FakeClock",
    "FakeGoogleTTS",
    "FakeOpenAISpeech",
    "FakePolly",
    "FakeSegmind",
    "FakeServer",
    "FakeTogether",
    "LoggedRequest",
    "ScriptedResponse",
    "Synthesizer",
    "tone_synthesizer",
]
