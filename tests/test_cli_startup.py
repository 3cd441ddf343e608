"""``oyez`` starts at once: each command imports only what it uses (issue #16).

Timings are not asserted (they depend on the machine's load); what makes them is: the modules a
fresh interpreter holds after ``import bot.cli`` and after a command, read from ``sys.modules``
in a subprocess so that nothing this test process imported counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bot.cli import FORMATS
from bot.schedules.cli import PRIORITIES
from bot.speech import OutputProfile, Priority

#: What ``import bot.cli`` (and so ``oyez --help``) must not import: each costs tens of ms.
HEAVY = (
    "pydantic",
    "pydantic_settings",
    "yaml",
    "aiohttp",
    "onnxruntime",
    "piper",
    "numpy",
    "croniter",
    "redis",
    "prometheus_client",
    "ffmpeg",
    "importlib.metadata",
    "asyncio",
    "bot.ops.config",
    "bot.speech",
    "bot.synthesis.pipeline",
)
#: What ``oyez voices`` (Piper's voices are files; no cloud provider has a key) must not import.
NOT_FOR_VOICES = (
    "aiohttp",
    "onnxruntime",
    "piper",
    "numpy",
    "croniter",
    "prometheus_client",
    "bot.synthesis.pipeline",
)
#: What ``oyez say`` with Piper must not import (redis: only with engine.url set).
NOT_FOR_SAY = ("aiohttp", "croniter", "redis", "bot.schedules.model", "bot.web.server")


def loaded_after(code: str, cwd: Path) -> set[str]:
    """The names in ``sys.modules`` after a fresh interpreter ran ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_") and "API_KEY" not in k}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
        check=True,
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_import_bot_cli_imports_no_heavy_module(tmp_path: Path) -> None:
    loaded = loaded_after("import bot.cli", tmp_path)
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_help_builds_the_whole_parser_without_them(tmp_path: Path) -> None:
    code = (
        "import contextlib, io\nfrom bot.cli import main\n"
        "for argv in (['--help'], ['say', '--help'], ['schedule', 'add', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)"
    )
    loaded = loaded_after(code, tmp_path)
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_voices_imports_no_engine_and_no_http_client(tmp_path: Path) -> None:
    code = (
        "import contextlib, io\nfrom bot.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):"
        "\n    assert main(['voices']) == 0"
    )
    loaded = loaded_after(code, tmp_path)
    assert sorted(m for m in NOT_FOR_VOICES if m in loaded) == []


def test_say_imports_only_its_own_parts(tmp_path: Path) -> None:
    code = (
        "import contextlib, io\nfrom bot.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['say', 'Hello.', '--no-cache', '-o', 'hello.ogg']) == 0"
    )
    loaded = loaded_after(code, tmp_path)
    assert (tmp_path / "hello.ogg").stat().st_size > 0
    assert "piper" in loaded
    assert sorted(m for m in NOT_FOR_SAY if m in loaded) == []


#: What the cold ``oyez say`` has not imported yet when the model starts loading (each is tens of
#: ms the load overlaps).
BEFORE_THE_HEAD_START = ("pydantic", "bot.ops.config", "bot.synthesis.pipeline", "av")


def test_say_starts_loading_the_model_before_the_configuration(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, threading\nfrom bot.cli import main\nseen = []\n"
        "start = threading.Thread.start\n"
        "def spy(self):\n"
        "    if self.name == 'piper-preload':\n"
        f"        seen.append(sorted(m for m in {BEFORE_THE_HEAD_START!r} if m in sys.modules))\n"
        "    start(self)\n"
        "threading.Thread.start = spy\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['say', 'Hello.', '--no-cache', '-o', 'hello.ogg']) == 0\n"
        "print(json.dumps(seen), file=sys.stderr)"
    )
    script = f"import json, sys\n{code}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
        check=True,
    )
    assert json.loads(result.stderr.strip().splitlines()[-1]) == [[]]
    assert (tmp_path / "hello.ogg").stat().st_size > 0


def test_the_written_out_choices_are_the_enums_values() -> None:
    assert tuple(p.value for p in OutputProfile) == FORMATS
    assert tuple(p.value for p in Priority) == PRIORITIES


def test_version_is_read_when_asked(tmp_path: Path) -> None:
    from bot import __version__

    result = subprocess.run(
        [sys.executable, "-m", "bot", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=60,
        check=True,
    )
    assert result.stdout == f"oyez {__version__}\n"
