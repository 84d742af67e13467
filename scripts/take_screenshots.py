"""Take the documentation screenshots with the real app and the bundled student model.

Run under a virtual display, e.g.::

    xvfb-run -s "-screen 0 1400x900x24" .venv/bin/python scripts/take_screenshots.py [CT_DICOM_FOLDER]

It scripts the main window the way a user would (open a CT, draw boxes for three organs on the axial view, put
the crosshair in the liver, propagate it), waits for the model, and writes ``docs/screenshots/*.png`` (each under
300 KB). The window shows the three linked views.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
DEFAULT_CT = ROOT.parent / "shared" / "data" / "raw" / "ct_dicom_series"
SLICE = 10
#: label name -> box (x0, y0, x1, y1) in pixels of the axial slice SLICE of the dev CT series
ORGANS = {
    "liver": (100.0, 180.0, 265.0, 400.0),
    "spleen": (285.0, 290.0, 405.0, 385.0),
    "aorta": (247.0, 282.0, 281.0, 314.0),
}
CROSSHAIR = (SLICE, 290, 180)  # (z, y, x): in the liver, so the coronal and sagittal views cut through it

log = logging.getLogger("screenshots")


def wait_until(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run the event loop until ``condition()`` holds (RuntimeError after ``timeout`` s)."""
    from PyQt6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the app")
        QApplication.processEvents()
        time.sleep(0.02)


def save(widget: object, name: str) -> Path:
    """Grab ``widget`` and save it as PNG (256 colours when the full-colour file exceeds 250 KB)."""
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    tmp = Path(tempfile.mkstemp(suffix=".png")[1])
    widget.grab().save(str(tmp))  # type: ignore[attr-defined]
    image = Image.open(tmp).convert("RGB")
    image.save(path, optimize=True)
    if path.stat().st_size > 250_000:  # too big for the docs: 256 colours (UI screenshots stay faithful)
        image.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    tmp.unlink()
    log.info("wrote %s (%d KB)", path.relative_to(ROOT), path.stat().st_size // 1024)
    return path


def segment(window: object, name: str, box: tuple[float, float, float, float]) -> None:
    """Add a label and draw its box, exactly as a left-drag with the box tool does."""
    session = window.session  # type: ignore[attr-defined]
    view = window.views["axial"]  # type: ignore[attr-defined]  # (window.view follows the pointer)
    session.add_label(name)
    label = session.active_label
    arr = np.asarray(box, dtype=np.float64)
    view.last_box = (view.axial_z, arr)
    view.refresh()
    view.box_drawn.emit(view.axial_z, arr)
    wait_until(lambda: bool((session.labels[view.axial_z] == label).any()))
    log.info("segmented %s: %d pixels", name, int((session.labels[view.axial_z] == label).sum()))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("MEDSAM_DESKTOP_DATA", tempfile.mkdtemp(prefix="medsam-shots-"))  # no autosave litter
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from medsam_desktop.ui.main_window import MainWindow
    from medsam_desktop.ui.settings_dialog import AppSettings

    ct = Path(argv[1]) if len(argv) > 1 else DEFAULT_CT
    app = QApplication.instance() or QApplication(argv[:1])
    store = QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"), QSettings.Format.IniFormat)
    AppSettings(model="auto", threads=os.cpu_count() or 1, cache_mb=256, overlap="overwrite").save(store)
    window = MainWindow(store=store, prefetch=0)
    window.resize(1360, 860)
    window.show()
    wait_until(window.isVisible)
    app.processEvents()
    save(window, "empty_window")

    if not window.open_path_and_wait(ct):
        raise SystemExit(f"cannot open {ct}")
    axial = window.views["axial"]
    window.grid.set_position(CROSSHAIR)
    for name, box in ORGANS.items():
        segment(window, name, box)
    window.session.set_active_label(window.session.table.ids()[0])
    axial.last_box = (SLICE, np.asarray(ORGANS["liver"]))
    axial.refresh()
    save(window, "ct_masks")
    dock = window.labels_panel.parentWidget()
    save(dock, "labels_panel")

    done: list[int] = []
    window.worker.progress.connect(lambda _req, n, _total: done.append(n))
    depth = window.session.shape[0]
    window.propagate(below=SLICE, above=depth - 1 - SLICE, stop_when_empty=True)  # the dialog's default
    wait_until(lambda: bool(done) and done[-1] >= 5)
    save(window, "propagation")  # the uncommitted slices show in the coronal and sagittal views as they come
    wait_until(lambda: not window.segmentation.propagating, timeout=600)
    axial.set_slice(SLICE + 2)
    liver = int((window.session.labels == 1).sum())
    stats = window.statistics_panel  # recomputed in the background after the propagation
    wait_until(lambda: bool(stats.rows) and stats.rows[0].voxels == liver, timeout=60)
    save(window, "three_views")
    window.session.mark_saved()  # nothing to ask on close
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
