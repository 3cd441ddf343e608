#!/usr/bin/env bash
# Installs Home Assistant 2025.4.4 (and the frontend it always loads) in its own Python 3.13
# virtual environment, cached outside the repository, for the tests that run a real Home
# Assistant on 127.0.0.1 (tests/support/homeassistant.py). Idempotent: a finished install is
# marked by a stamp file and reused. Prints the venv's path on its last line.
# Home Assistant installs an integration's requirements when it first loads it; with --skip-pip
# (and offline) it cannot, so the ones the tests load are installed here: wyoming, pinned by
# the Wyoming integration's manifest.json. A cached venv from before gets them added.
set -euo pipefail
HA_VERSION=2025.4.4
FRONTEND_VERSION=20250411.0
INTEGRATION_REQUIREMENTS=("wyoming==1.5.4")
venv="${OYEZ_HA_VENV:-$HOME/.cache/oyez/homeassistant-$HA_VERSION}"
stamp="$venv/.oyez-installed"
if [ -f "$stamp" ]; then
  if ! "$venv/bin/python" -c 'import wyoming' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${INTEGRATION_REQUIREMENTS[@]}" >&2
  fi
  echo "$venv"; exit 0
fi

python313="${OYEZ_HA_PYTHON:-}"
if [ -z "$python313" ]; then
  for candidate in python3.13 "$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python3"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      python313="$candidate"; break
    fi
  done
fi
if [ -z "$python313" ]; then
  echo "install_homeassistant: no Python 3.13 found (set OYEZ_HA_PYTHON)" >&2; exit 1
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python313" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "homeassistant==$HA_VERSION" "home-assistant-frontend==$FRONTEND_VERSION" \
  "${INTEGRATION_REQUIREMENTS[@]}" >&2
touch "$stamp"
echo "$venv"
