#!/usr/bin/env bash
# Set up everything napari-denodet needs on a fresh Debian machine, idempotently:
# system libraries for headless Qt (when missing and we are root), a venv in .venv,
# the CPU torch wheel *before* the package (a bare "torch" would pull a CUDA build),
# and the package in editable mode with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

apt_packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0
  libxcb-randr0 libgl1 libegl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3)

# pip on these machines warns about every package index folder that is absent; the
# warnings say nothing about this project, so they are filtered out (errors still show).
pip_install() {
  "$VENV/bin/pip" install -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages for headless Qt: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: warning: missing system packages (${missing[*]}); GUI tests need them" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
  pip_install -U pip
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==$TORCH_VERSION (CPU wheel)"
  pip_install "torch==$TORCH_VERSION"
fi

stamp="$VENV/.napari-denodet-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ napari.yaml -nt "$stamp" ]; then
  echo "setup: installing napari-denodet (editable, with test extras)"
  pip_install -e ".[testing]"
  touch "$stamp"
fi
