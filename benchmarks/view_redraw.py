"""Redraw cost of the window's views on a 512x512x300 CT: ms per slice change and per brush dab, three linked views
against one maximised view.

The real :class:`~medsam_desktop.ui.main_window.MainWindow` (offscreen Qt, software raster: the CPU cost a laptop
without GPU drawing pays) shows the synthetic CT of ``benchmarks/synthetic_ct.py`` with a label map of two labels.
A slice change is ``view.step(1)`` (what the wheel and the Up key call) followed by the paint of every shown view
(the other views' crosshair lines move); a brush dab is one left-button mouse move of a stroke (the segment painted,
then every shown view redrawn). p50 and p95 per view orientation.

``--model fake`` (default) isolates the drawing: the model is an instant stand-in, so the worker's prefetch of the
shown slice costs nothing. ``--model default`` loads what the app runs (the shipped student, its default runtime):
each slice change then also starts an encode on the worker thread, as in the app.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/view_redraw.py [--repeats 60] [--model fake|default]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

try:
    from benchmarks._common import machine_line, percentile_ms
    from benchmarks.synthetic_ct import synthetic_ct
except ImportError:  # run as a script from benchmarks/
    from _common import machine_line, percentile_ms  # type: ignore[no-redef]
    from synthetic_ct import synthetic_ct  # type: ignore[no-redef]


class _InstantModel:
    """Encodes and decodes at once (zeros): the redraw is all that is measured."""

    name = "instant"

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((images.shape[0], 256, 64, 64), np.float32)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(np.asarray(boxes).reshape(-1, 4))
        return np.full((n, 256, 256), -10.0, np.float32), np.ones(n, np.float32)


def _paint(window) -> None:
    """Deliver what is queued, then paint every shown view now (synchronously)."""
    from PyQt6.QtWidgets import QApplication

    QApplication.processEvents()
    for view in window.views.values():
        if view.isVisible():
            view.viewport().repaint()


def _slice_changes(window, view, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        view.step(1 if (i // 10) % 2 == 0 else -1)  # back and forth around the middle
        _paint(window)
        times.append(time.perf_counter() - t0)
    return times


def _brush_dabs(window, view, repeats: int) -> list[float]:
    from PyQt6.QtCore import QEvent, QPointF, Qt
    from PyQt6.QtGui import QMouseEvent
    from PyQt6.QtWidgets import QApplication

    rows, cols = view.plane.size(view.session.shape)
    vp = view.viewport()

    def send(kind: QEvent.Type, col: float, row: float, buttons: Qt.MouseButton) -> None:
        p = view.pixel_to_widget(col, row)
        button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
        event = QMouseEvent(kind, QPointF(p), QPointF(vp.mapToGlobal(p)), button, buttons,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
        QApplication.sendEvent(vp, event)

    row = rows * 0.5
    x0, x1 = cols * 0.3, cols * 0.7
    send(QEvent.Type.MouseButtonPress, x0, row, Qt.MouseButton.LeftButton)
    times = []
    for col in np.linspace(x0, x1, repeats):
        t0 = time.perf_counter()
        send(QEvent.Type.MouseMove, float(col), row, Qt.MouseButton.LeftButton)
        _paint(window)
        times.append(time.perf_counter() - t0)
    send(QEvent.Type.MouseButtonRelease, x1, row, Qt.MouseButton.NoButton)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--model", choices=("fake", "default"), default="fake")
    parser.add_argument("--window", default="1600x1000", help="window size WxH (a 1080p laptop screen)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from medsam_desktop.io import Volume
    from medsam_desktop.ui.main_window import MainWindow
    from medsam_desktop.ui.slice_view import Tool

    app = QApplication.instance() or QApplication([])
    vol, _boxes = synthetic_ct(args.depth, args.size)
    labels = np.zeros(vol.shape, np.uint8)
    labels[vol >= 100] = 1
    labels[(vol >= 40) & (vol < 100)] = 2
    with tempfile.TemporaryDirectory(prefix="medsam-redraw-") as tmp:
        store = QSettings(os.path.join(tmp, "settings.ini"), QSettings.Format.IniFormat)
        factory = (lambda: _InstantModel()) if args.model == "fake" else None
        window = MainWindow(backend_factory=factory, store=store)
        width, height = (int(v) for v in args.window.split("x"))
        window.resize(width, height)
        window.show()
        window.set_volume(Volume(vol, spacing=(0.8, 0.8, 1.5), modality="CT"))
        assert window.session is not None
        window.session.replace_labels(labels)
        window.set_tool(Tool.BRUSH)
        window.set_brush_radius(8)
        _paint(window)
        results: dict[str, dict[str, float]] = {}
        for layout in ("three", "one"):
            for orientation in ("axial", "coronal", "sagittal"):
                window.set_orientation(orientation)
                if (layout == "one") != (window.grid.maximised is not None):
                    window.grid.toggle_maximise(orientation)
                view = window.view
                _paint(window)
                _slice_changes(window, view, 5)  # warm-up
                slices = _slice_changes(window, view, args.repeats)
                dabs = _brush_dabs(window, view, args.repeats)
                results[f"{layout}/{orientation}"] = {
                    "slice_p50_ms": percentile_ms(slices, 50), "slice_p95_ms": percentile_ms(slices, 95),
                    "dab_p50_ms": percentile_ms(dabs, 50), "dab_p95_ms": percentile_ms(dabs, 95),
                }  # fmt: skip
                window.undo()  # the stroke
        window.session.mark_saved()
        window.close()
    app.processEvents()
    print(machine_line(0))
    print(f"volume {args.size}x{args.size}x{args.depth} int16, window {args.window}, model {args.model}")
    print(f"{'layout/view':<18} {'slice p50':>10} {'slice p95':>10} {'dab p50':>9} {'dab p95':>9}  (ms)")
    for key, r in results.items():
        print(f"{key:<18} {r['slice_p50_ms']:>10.1f} {r['slice_p95_ms']:>10.1f} {r['dab_p50_ms']:>9.1f} "
              f"{r['dab_p95_ms']:>9.1f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_line(0), "model": args.model, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
