"""``oyez say -o PATH``: a regular file is replaced atomically; a special file (a FIFO,
``/dev/stdout``, ``/dev/null``, a device) is written to itself, never replaced by a regular
file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.cli import write_output
from tests.test_cli import oyez

AUDIO = b"RIFF" + bytes(range(256)) * 600  # over a pipe's 64 KiB buffer


class FifoReader(threading.Thread):
    """Reads a FIFO until its writer closes it (or :meth:`stop` when none ever came)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open now: a writer can open
        self.data = bytearray()
        self._stop_reading = threading.Event()
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(self.fd, 65536)
                except BlockingIOError:  # a writer is there, nothing written yet
                    time.sleep(0.005)
                    continue
                if chunk:
                    self.data += chunk
                elif self.data or self._stop_reading.is_set():
                    return  # the writer closed it (or never came)
                else:
                    time.sleep(0.005)
        finally:
            os.close(self.fd)

    def stop(self) -> bytes:
        self._stop_reading.set()
        self.join(10)
        return bytes(self.data)


def test_a_fifo_is_written_to_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "speaker.wav"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    assert write_output(fifo, AUDIO) is True
    assert reader.stop() == AUDIO
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert not (tmp_path / "speaker.wav.partial").exists()


def test_dev_null_stays_a_device() -> None:
    assert write_output(Path("/dev/null"), AUDIO) is True
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)


def test_a_regular_file_is_still_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out" / "speech.wav"
    assert write_output(target, b"first") is False  # a new file, its folder made
    before = target.stat().st_ino
    held = target.open("rb")  # a reader of the old file keeps seeing it whole
    assert write_output(target, AUDIO) is False
    assert target.read_bytes() == AUDIO
    assert target.stat().st_ino != before  # renamed over, not rewritten in place
    assert held.read() == b"first"
    held.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["speech.wav"]


def test_say_onto_a_fifo_and_onto_dev_stdout(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    result = oyez("say", "Into the pipe.", "-o", str(fifo), cwd=tmp_path)
    audio = reader.stop()
    assert result.returncode == 0, result.stderr
    assert audio[:4] == b"RIFF"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert "Said: Into the pipe." in result.stderr  # its output may be the audio's

    piped = subprocess.run(
        [sys.executable, "-m", "bot", "say", "Out.", "-o", "/dev/stdout", "--format", "wav"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")},
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout[:4] == b"RIFF"
    assert b"Said: Out." in piped.stderr
