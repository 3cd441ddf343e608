"""Shared fixtures. Everything runs offline: Piper, ffmpeg and the recogniser are local."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.ops import config
from bot.ops.config import Settings
from bot.synthesis.pipeline import SpeechPipeline
from tests.support.asr import Transcriber
from tests.support.secrets import SecretScanner

_scanner = SecretScanner()


def pytest_configure() -> None:
    """Watch every log record of the whole run for the suite's fake keys and tokens."""
    root = logging.getLogger()
    root.addHandler(_scanner)
    root.setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when any log record carried a secret (see tests/support/secrets.py)."""
    if _scanner.leaks:
        lines = "\n".join(f"  {leak}" for leak in _scanner.leaks[:20])
        print(f"\nSECRETS IN LOG OUTPUT ({len(_scanner.leaks)} records):\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        f"secret scan: {_scanner.seen} log records checked, {len(_scanner.leaks)} with a secret"
    )


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's OYEZ_* variables or ./oyez.yaml. The audio cache is off
    unless a test turns it on: tests of providers must reach the providers."""
    for name in list(os.environ):
        if name.startswith("OYEZ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OYEZ_CACHE__ENABLED", "false")
    # Piper without its sampling noise: the same text is the same take in every run, so the
    # listening tests hear the same thing each time (a test may still set its own noise)
    monkeypatch.setenv("OYEZ_PROVIDERS__PIPER__NOISE_SCALE", "0")
    monkeypatch.setenv("OYEZ_PROVIDERS__PIPER__NOISE_W_SCALE", "0")
    monkeypatch.chdir(tmp_path)
    # the CLI's setup_logging() raises the root level; the secret scan must see every record
    logging.getLogger().setLevel(logging.DEBUG)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):  # a CLI test's stderr handler outlives its capture
        if getattr(handler, "_oyez", False):
            root.removeHandler(handler)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return config.load(data_dir=tmp_path / "data")


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[SpeechPipeline]:
    speech = SpeechPipeline(settings)
    yield speech
    await speech.aclose()


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber()
