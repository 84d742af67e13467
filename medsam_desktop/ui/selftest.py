"""Self-test of an installed or packaged app: ``medsam-desktop --self-test`` (and the bundle's
``MedSAM-Desktop --self-test``) runs headless: it builds the main window offscreen, loads the default model,
segments the ``ct-vertebra`` sample (a synthetic disk when pydicom's file is absent) with its preset box, checks
that the mask is plausible, corrects it with one click through the click path (loaded as at the first click in the
app) and prints one line with the runtime and the timings. The version line is
``cli.version``; the segment-and-save path without a window is ``cli.segment_export``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..text import exception_line

log = logging.getLogger(__name__)


SELF_TEST_SAMPLE = "ct-vertebra"
MIN_BOX_FRACTION = 0.20  # a plausible mask covers 20-100 % of its box ...
MAX_BOX_FRACTION = 1.00
INSIDE_MARGIN = 2  # ... and stays inside it (pixels of slack for the resize round trip)

_T0 = time.perf_counter()  # module import: the fallback origin when the process start time is unknown


class SelfTestError(RuntimeError):
    """The self-test failed; the message is one line that says what went wrong."""


def use_offscreen_qt() -> None:
    """Headless Qt: must run before PyQt6 is imported (an explicit QT_QPA_PLATFORM is respected)."""
    if "PyQt6.QtWidgets" in sys.modules:
        log.debug("Qt already imported; QT_QPA_PLATFORM is %s", os.environ.get("QT_QPA_PLATFORM"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def seconds_since_start() -> float:
    """Seconds since this process started (Linux: from /proc, so it includes the interpreter's start-up)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _T0


@dataclass(frozen=True)
class SelfTestResult:
    window_s: float  # process start -> main window shown (offscreen)
    load_s: float  # model load (weights read, verified against the card, fused)
    mask_s: float  # first mask: encode + decode of one slice
    source: str
    box: tuple[float, float, float, float]
    mask_px: int
    box_fraction: float
    samples: str = ""  # "2/2": sample files found / listed (File > Open sample)
    runtime: str = ""  # "OpenVINO int8": what ran (core.backends.describe)
    clicks: str = ""  # the click path that ran ("clicks+openvino+bf16")
    click_s: float = 0.0  # one click: the click path's decode, after its load

    def line(self) -> str:
        return (
            f"self-test OK: {self.runtime}; window {self.window_s:.2f} s after start, model load {self.load_s:.2f} s, "
            f"first mask {self.mask_s * 1e3:.0f} ms ({self.source}, {self.mask_px} px = {self.box_fraction:.0%} of "
            f"the box; click {self.click_s * 1e3:.0f} ms on {self.clicks}; samples {self.samples})"
        )


def _test_image() -> tuple[np.ndarray, tuple[float, float, float, float], str]:
    """The CT sample mapped as the app maps it (uint8, soft-tissue window), else a synthetic bright disk."""
    from ..core.inference.model_input import ModelInput
    from ..io import read_image
    from ..samples import SampleNotAvailableError, get_sample

    try:
        sample = get_sample(SELF_TEST_SAMPLE)
        volume = read_image(sample.path())
        return ModelInput(volume)[0], sample.box, f"sample {sample.key}"
    except (SampleNotAvailableError, KeyError, OSError) as exc:
        log.warning("sample unavailable (%s): using a synthetic image", exc)
    yy, xx = np.mgrid[:128, :128]
    image = np.where((yy - 64) ** 2 + (xx - 60) ** 2 < 20**2, 200, 30).astype(np.uint8)
    return image, (36.0, 40.0, 84.0, 88.0), "synthetic disk"


def check_mask(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of the box covered; raises :class:`SelfTestError` unless the mask is plausible for the box."""
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1.0)
    n = int(mask.sum())
    if n == 0:
        raise SelfTestError("self-test FAILED: the mask is empty")
    ys, xs = np.nonzero(mask)
    m = INSIDE_MARGIN
    if xs.min() < x0 - m or xs.max() > x1 + m or ys.min() < y0 - m or ys.max() > y1 + m:
        raise SelfTestError(
            f"self-test FAILED: the mask spills outside the box (x {xs.min()}..{xs.max()}, y {ys.min()}..{ys.max()}"
            f" for box {box})"
        )
    fraction = n / area
    if not MIN_BOX_FRACTION <= fraction <= MAX_BOX_FRACTION:
        raise SelfTestError(
            f"self-test FAILED: the mask covers {fraction:.0%} of the box "
            f"(expected {MIN_BOX_FRACTION:.0%}-{MAX_BOX_FRACTION:.0%})"
        )
    return fraction


def _show_window() -> float:
    """Build and show the main window offscreen (settings in a throwaway file); seconds since process start."""
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="medsam-selftest-") as tmp:
        store = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(backend_factory=_no_model, store=store)
        window.show()
        app.processEvents()
        shown = seconds_since_start()
        window.worker.shutdown()
        window.autosaver.close()
        window.hide()
        window.deleteLater()
        app.processEvents()
    return shown


def _no_model() -> object:
    raise RuntimeError("the self-test's window does not load a model")


def run_self_test() -> SelfTestResult:
    """Window, bundled model, one mask; raises :class:`SelfTestError` (one line) on any failure."""
    try:
        window_s = _show_window()
    except Exception as exc:
        raise SelfTestError(f"self-test FAILED: the window could not be created ({_one_line(exc)})") from exc
    from ..core.backends import describe, load_backend
    from ..core.inference.predictor import Predictor
    from ..core.inference.propagation import segment_slice
    from ..model_files import STUDENT_NAME

    t = time.perf_counter()
    try:
        backend = load_backend(STUDENT_NAME)
        predictor = Predictor(backend)
    except Exception as exc:
        raise SelfTestError(f"self-test FAILED: the bundled model could not be loaded ({_one_line(exc)})") from exc
    if backend.fallback_reason:
        raise SelfTestError(f"self-test FAILED: the default did not run ({backend.fallback_reason})")
    load_s = time.perf_counter() - t
    image, box, source = _test_image()
    t = time.perf_counter()
    mask = segment_slice(predictor, image, np.array([box])) > 0
    mask_s = time.perf_counter() - t
    fraction = check_mask(mask, box)
    clicks, click_s = _one_click(predictor, image, box)
    return SelfTestResult(window_s, load_s, mask_s, source, box, int(mask.sum()), fraction, _samples_found(),
                          describe(backend), clicks, click_s)  # fmt: skip


def _one_click(predictor: object, image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[str, float]:
    """A positive click at the box centre through the shipped click path: (its name, seconds of the decode)."""
    from ..core.backends.clicks import load_click_backend
    from ..core.inference.clicks import ClickPoint, ClickRefiner, model_image
    from ..model_files import STUDENT_NAME, weights_for

    try:
        refiner = ClickRefiner(lambda: load_click_backend(weights_for(STUDENT_NAME)))
        emb = predictor.encode(image)  # type: ignore[attr-defined]
        first = predictor.decode(emb, np.array(box))  # type: ignore[attr-defined]
        name = refiner.backend.name
        point = [ClickPoint((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, True)]
        slice_image = model_image(image) if refiner.needs_image else None
        t = time.perf_counter()
        after = refiner.refine(emb, np.array(box), point, first.logits[0], slice_image)
        seconds = time.perf_counter() - t
    except Exception as exc:
        raise SelfTestError(f"self-test FAILED: the click path did not run ({_one_line(exc)})") from exc
    if not after.masks[0].any():
        raise SelfTestError("self-test FAILED: the mask after a positive click is empty")
    return name, seconds


def _samples_found() -> str:
    """How many listed samples have their file (choosing a missing one shows a one-line message)."""
    from ..samples import SampleNotAvailableError, list_samples

    try:
        listed = list_samples()
    except (OSError, ValueError, KeyError) as exc:
        log.warning("sample list unreadable: %s", exc)
        return "unreadable"
    found = 0
    for sample in listed:
        try:
            sample.path()
            found += 1
        except SampleNotAvailableError:
            pass
    return f"{found}/{len(listed)}"


def _one_line(exc: BaseException) -> str:
    return exception_line(exc, with_type=True)
