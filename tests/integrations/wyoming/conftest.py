"""The Wyoming tests' shared set-up."""

from __future__ import annotations

import pytest

from integrations.piper.models import builtin_model_path, config_path_of, load_stream


@pytest.fixture(scope="session", autouse=True)
def piper_split() -> None:
    """The built-in voice split at its vocoder once, before any server starts: a Wyoming server
    makes it ready in the background (``wyoming.stream_within_sentence``), and on a fresh
    machine the first split (~3 s of CPU in a process of its own) would run beside the first
    test that times its audio."""
    model = builtin_model_path()
    assert load_stream(model, config_path_of(model)) is not None
