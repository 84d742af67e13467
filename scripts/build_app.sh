#!/usr/bin/env bash
# Build the one-folder app dist/MedSAM-Desktop/ with PyInstaller and check it with its own --self-test.
#
#   bash scripts/setup.sh && bash scripts/build_app.sh
#
# Needs the README's setup (.venv with the package, PyQt6 and the bundled student weights in models/).
# Installs PyInstaller into .venv when missing. NICE=19 runs the build at low priority (the default is 0).
# On Linux the build takes 1-2 minutes (2 cores) and the bundle is ~0.61 GB unpacked (see docs/packaging.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || [ ! -f .venv/Scripts/python.exe ] || PY=.venv/Scripts/python.exe  # Windows (Git Bash), untested
RUN=(nice -n "${NICE:-0}")
if [ ! -x "$PY" ]; then
    echo "build_app.sh: .venv is missing: run 'bash scripts/setup.sh' first" >&2
    exit 1
fi
if [ ! -f models/medsam_lite_repvit_m0_6.md ] || [ ! -f models/medsam_lite_repvit_m0_6.openvino/encoder-int8.xml ]; then
    echo "build_app.sh: models/medsam_lite_repvit_m0_6.md and its OpenVINO files (training/export_runtime.py) are required" >&2
    exit 1
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    "${RUN[@]}" "$PY" -m pip install --quiet --disable-pip-version-check "pyinstaller>=6.10"
fi
start=$(date +%s)
"${RUN[@]}" "$PY" -m PyInstaller build.spec --noconfirm --log-level WARN
echo "build_app.sh: built dist/MedSAM-Desktop in $(( $(date +%s) - start )) s, $(du -sh dist/MedSAM-Desktop | cut -f1)"
case "$(uname -s)" in
    Darwin) APP=dist/MedSAM-Desktop.app/Contents/MacOS/MedSAM-Desktop ;;
    MINGW*|MSYS*|CYGWIN*) APP=dist/MedSAM-Desktop/MedSAM-Desktop.exe ;;
    *) APP=dist/MedSAM-Desktop/MedSAM-Desktop ;;
esac
QT_QPA_PLATFORM=offscreen "${RUN[@]}" "$APP" --version
QT_QPA_PLATFORM=offscreen "${RUN[@]}" "$APP" --self-test
