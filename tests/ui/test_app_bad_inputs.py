"""Bad inputs through the app's own code paths: File › Open…, File › Open DICOM folder…, drag and drop,
File › Open mask onto image… and File › Save labels….

For every bad input the app shows exactly ONE error dialog whose text is one line saying what is wrong and what
to do (no traceback text), nothing raises out of the event loop, and the session that was open before (image,
labels, undo history) is untouched and still usable. Odd but usable inputs (NaN voxels, unusual dtypes,
RGBA/palette pictures, a DICOM folder with two series) open and can be segmented. The input files come from the
builders shared with the engine/CLI suite (tests/bad_files.py), generated in tmp_path.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import stat
import tempfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_files import READ_ERRORS, READ_OK, huge_png, npz_object_array, rgba_png, truncated_nifti, write_nifti
from PyQt6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PyQt6.QtGui import QDragEnterEvent, QDropEvent
from PyQt6.QtWidgets import QApplication, QFileDialog, QInputDialog, QMessageBox
from window_helpers import drain_worker, open_synthetic

from medsam_desktop.core.document.annotation import sidecar_path
from medsam_desktop.io import Volume, write_labels_nifti
from medsam_desktop.ui import dialogs

SHAPE = (5, 30, 40)  # D, H, W of the image that is open before every bad input
SPACING, ORIGIN = (0.7, 0.9, 2.5), (-12.5, 30.25, 7.0)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

#: text that must never reach the user: traceback lines, exception reprs, C++ sources, object reprs
LEAKS = re.compile(
    r"Traceback|File \"|\b\w*(Error|Exception|Warning): |sitk::|\.cxx\b|\.py\b|line \d+|<\w[\w.]* object at|\\n"
)


# --- recording dialogs and unhandled exceptions ---------------------------------------------------------------


@dataclass
class Shown:
    """One dialog the app opened: ``kind`` is error, info, ask_save or a raw QMessageBox/QInputDialog call."""

    kind: str
    title: str
    text: str


@dataclass
class Recorder:
    shown: list[Shown] = field(default_factory=list)
    exceptions: list[object] = field(default_factory=list)
    series_answer: str | None = None  # item text to pick in the series chooser; None: Cancel
    offered: list[list[str]] = field(default_factory=list)

    @property
    def errors(self) -> list[Shown]:
        return [s for s in self.shown if s.kind != "ask_save"]


@pytest.fixture
def rec(make_window, qtbot, monkeypatch) -> Iterator[Recorder]:
    """Every dialog function the window uses is replaced by a recorder (a real modal dialog would block the
    offscreen test); unhandled exceptions in slots/threads are captured instead of only being printed."""
    r = Recorder()

    def show(kind: str) -> Callable[[object, str, str], None]:
        return lambda parent, title, message: r.shown.append(Shown(kind, title, message))

    monkeypatch.setattr(dialogs, "show_error", show("error"))
    monkeypatch.setattr(dialogs, "show_info", show("info"))

    def ask_save(parent: object) -> str:
        r.shown.append(Shown("ask_save", "Unsaved labels", ""))
        return "discard"

    monkeypatch.setattr(dialogs, "ask_save_changes", ask_save)
    for name in ("warning", "critical", "information", "question"):  # a message box bypassing dialogs.py

        def raw(parent: object, title: str = "", text: str = "", *_: object, _name: str = name) -> object:
            r.shown.append(Shown(f"QMessageBox.{_name}", str(title), str(text)))
            return QMessageBox.StandardButton.Ok

        monkeypatch.setattr(QMessageBox, name, staticmethod(raw))

    def choose(parent: object, title: str, label: str, items: list[str], *args: object) -> tuple[str, bool]:
        r.offered.append(list(items))
        pick = next((i for i in items if r.series_answer and r.series_answer in i), None)
        return (pick, True) if pick is not None else ("", False)

    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(choose))
    thread_hook = threading.excepthook
    monkeypatch.setattr(threading, "excepthook", lambda args: (r.exceptions.append(args), thread_hook(args)))
    with qtbot.captureExceptions() as exceptions:  # replaces sys.excepthook while the test runs
        r.exceptions = exceptions  # type: ignore[assignment]
        yield r


# --- the session that is open before each bad input ----------------------------------------------------------


def reference_volume() -> Volume:
    arr = np.random.default_rng(0).integers(-1000, 1000, size=SHAPE).astype(np.int16)
    return Volume(arr, spacing=SPACING, origin=ORIGIN, direction=DIRECTION, modality="CT")


def write_reference(folder: Path) -> Path:
    vol = reference_volume()
    image = sitk.GetImageFromArray(vol.array)
    vol.geometry.apply_to(image)
    path = folder / "base.nii.gz"
    sitk.WriteImage(image, str(path), True)
    return path


@dataclass
class Before:
    """What must survive a failed open/save: the session object, its labels, table and undo/redo depth."""

    session: object
    volume: object
    labels: np.ndarray
    history: int
    undo_text: str
    redo_text: str
    table: str
    active: int
    dirty: bool
    title: str
    volume_key: object

    @classmethod
    def of(cls, window) -> Before:
        s = window.session
        undo, redo = s.history.undo_text(), s.history.redo_text()
        title, key = window.windowTitle(), window.worker.volume_key
        return cls(s, s.volume, s.labels.copy(), len(s.history), undo, redo, s.table.to_json(), s.active_label,
                   s.dirty, title, key)  # fmt: skip

    def assert_unchanged(self, window) -> None:
        s = window.session
        assert s is self.session and s.volume is self.volume, "the open image was replaced"
        assert window.view.session is s and window.labels_panel.session is s
        np.testing.assert_array_equal(s.labels, self.labels, err_msg="the labels changed")
        assert s.labels.dtype == self.labels.dtype
        assert (len(s.history), s.history.undo_text(), s.history.redo_text()) == (
            self.history, self.undo_text, self.redo_text), "the undo history changed"  # fmt: skip
        assert s.table.to_json() == self.table and s.active_label == self.active
        assert s.dirty == self.dirty and window.windowTitle() == self.title
        assert window.worker.volume_key == self.volume_key, "the model was switched to another image"
        assert not window.load_progress.isVisible() and QApplication.overrideCursor() is None


@pytest.fixture
def app(make_window, rec, tmp_path, qtbot):
    """A window with the reference CT open, two labels drawn and one step undone (so redo is possible too)."""
    window = make_window()
    assert window.open_path_and_wait(write_reference(tmp_path))
    s = window.session
    mask = np.zeros(SHAPE[1:], bool)
    mask[5:20, 8:30] = True
    s.add_label("liver")
    s.apply_mask(2, mask)
    s.add_label("spleen")
    s.apply_mask(3, mask[::-1])
    s.add_label("kidney")
    s.undo()
    assert len(s.history) == 5 and s.history.can_redo and s.dirty
    rec.shown.clear()
    return window


def assert_one_line_message(rec: Recorder, title: str, must_contain: str, names: str | None = None) -> str:
    """Exactly one error dialog: one line, no traceback text, says what is wrong and what to do."""
    assert len(rec.errors) == 1, f"expected one dialog, got {rec.shown}"
    shown = rec.errors[0]
    assert shown.kind == "error" and shown.title == title, shown
    text = shown.text
    assert "\n" not in text and "\r" not in text and len(text) <= 400, text
    assert not LEAKS.search(text), f"technical text reaches the user: {text}"
    assert must_contain in text, f"expected {must_contain!r} in: {text}"
    if names is not None:
        assert names in text, f"the message does not name {names}: {text}"
    # what is wrong, then what to do: at least two sentences, ending with a full stop
    assert re.search(r"[.!]\s+[A-Z].*\w.*[.!]$", text), f"no action sentence: {text}"
    assert not rec.exceptions, f"unhandled exception: {rec.exceptions}"
    return text


def assert_still_usable(window, qtbot) -> None:
    """The old session still takes a box and can undo it."""
    s = window.session
    z = window.view.axial_z
    before = s.labels[z].copy()
    steps = len(s.history)
    window.view.box_drawn.emit(z, np.array([2.0, 2.0, 12.0, 12.0]))
    qtbot.waitUntil(lambda: not np.array_equal(s.labels[z], before), timeout=5000)
    assert len(s.history) == steps or len(s.history) == steps + 1
    window.undo()
    np.testing.assert_array_equal(s.labels[z], before)


# --- opening through the menus and by dropping ---------------------------------------------------------------


def _drop(window, path: Path) -> None:
    """Drag ``path`` onto the window and drop it (Qt delivers a drop only after an accepted drag-enter)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    where, copy = QPoint(20, 20), Qt.DropAction.CopyAction
    no_button, no_key = Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(where, copy, mime, no_button, no_key)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted(), "the window refuses the drag"
    drop = QDropEvent(QPointF(where), copy, mime, no_button, no_key)
    QApplication.sendEvent(window, drop)
    assert drop.isAccepted(), "the window refuses the drop"


def open_via(route: str, window, path: Path, monkeypatch) -> None:
    """Open ``path`` the way a user would: the menu's file/folder dialog, or dropping it on the window."""
    if route == "menu":
        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(path)))
        action = window.act_open_dicom if path.is_dir() else window.act_open
        assert action.isEnabled()
        action.trigger()
    else:
        _drop(window, path)


def wait_idle(window, qtbot, until: Callable[[], bool]) -> None:
    """Wait for ``until``, then for every reading thread to end (a job leaves ``_jobs`` only after its result was
    handled), then for every request the window posted to the worker to end and its results to be handled."""
    qtbot.waitUntil(until, timeout=20000)
    qtbot.waitUntil(lambda: not window.loader._jobs, timeout=20000)
    drain_worker(qtbot, window.worker)


ROUTES = ["menu", "drop"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_bad_file_is_refused_and_the_session_is_untouched(app, rec, qtbot, tmp_path, monkeypatch, route, case):
    build, _, text = READ_ERRORS[case]
    (tmp_path / "in").mkdir()
    path = build(tmp_path / "in")
    before = Before.of(app)
    open_via(route, app, path, monkeypatch)
    wait_idle(app, qtbot, lambda: bool(rec.errors))
    assert_one_line_message(rec, "Cannot open", text, names=path.name)
    assert [s.kind for s in rec.shown].count("ask_save") == 1  # the labels were unsaved: asked once, first
    before.assert_unchanged(app)
    assert not (tmp_path / "in" / "PWNED").exists(), "an object array was unpickled"
    assert_still_usable(app, qtbot)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", sorted(READ_OK))
def test_odd_but_usable_file_opens_and_segments(app, rec, qtbot, tmp_path, monkeypatch, route, case):
    build, shape, _ = READ_OK[case]
    (tmp_path / "in").mkdir()
    path = build(tmp_path / "in")
    old = app.session
    rec.series_answer = "small"  # the two-series folder: pick the 2-slice series
    open_via(route, app, path, monkeypatch)
    wait_idle(app, qtbot, lambda: app.session is not old or bool(rec.errors))
    assert not rec.errors, rec.shown
    assert not rec.exceptions, rec.exceptions
    s = app.session
    expected = (2, *shape[1:3]) if case == "dicom_two_series" else shape[:3]
    assert s is not old and s.shape == expected and not s.labels.any() and len(s.history) == 0
    if case == "dicom_two_series":
        assert len(rec.offered) == 1 and len(rec.offered[0]) == 2, rec.offered
        assert s.volume.description == "small"
    else:
        assert not rec.offered
    assert np.isfinite([app.view.level, app.view.width]).all() and app.view.width > 0
    z = app.view.axial_z
    app.view.box_drawn.emit(z, np.array([4.0, 4.0, 30.0, 30.0]))
    qtbot.waitUntil(lambda: s.labels[z].any(), timeout=5000)
    ys, xs = np.nonzero(s.labels[z])
    assert np.abs(np.subtract([xs.min(), ys.min(), xs.max(), ys.max()], [4, 4, 30, 30])).max() <= 1
    assert not rec.errors and not rec.exceptions


@pytest.mark.parametrize("route", ROUTES)
def test_cancelling_the_series_chooser_keeps_the_session(app, rec, qtbot, tmp_path, monkeypatch, route):
    path = READ_OK["dicom_two_series"][0](tmp_path)
    before = Before.of(app)
    rec.series_answer = None
    open_via(route, app, path, monkeypatch)
    wait_idle(app, qtbot, lambda: bool(rec.offered))
    assert rec.offered == [["CT big - 3 files", "CT small - 2 files"]]
    assert not rec.errors and not rec.exceptions
    before.assert_unchanged(app)
    assert_still_usable(app, qtbot)


def test_huge_png_is_refused_without_a_memory_blow_up(app, rec, qtbot, tmp_path, monkeypatch):
    """20000 x 20000 pixels (400 MB as uint8, 1.2 GB as RGB) in a 50 kB file: refused before decoding."""
    path = huge_png(tmp_path)
    before = Before.of(app)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; peak of the process
    tracemalloc.start()  # traces every thread, the reading thread included
    try:
        open_via("menu", app, path, monkeypatch)
        wait_idle(app, qtbot, lambda: bool(rec.errors))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert_one_line_message(rec, "Cannot open", "too large", names=path.name)
    assert "Crop or downsample" in rec.errors[0].text
    assert peak < 50e6, f"python allocations peaked at {peak / 1e6:.0f} MB"
    assert rss_growth_mb < 300, f"peak RSS grew by {rss_growth_mb:.0f} MB"
    before.assert_unchanged(app)


# --- File › Open mask onto image… ----------------------------------------------------------------------------


def _mask_volume(labels: np.ndarray, **change: object) -> Volume:
    geometry = {"spacing": SPACING, "origin": ORIGIN, "direction": DIRECTION, **change}
    return Volume(labels, **geometry)  # type: ignore[arg-type]


def _labels(dtype: type = np.uint8, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    labels = np.zeros(shape, dtype)
    labels[1, 4:9, 4:9] = 1
    return labels


def _write_mask(path: Path, labels: np.ndarray, **change: object) -> Path:
    """A mask file with ``labels`` on the reference geometry (or with ``change`` applied), any dtype."""
    image = sitk.GetImageFromArray(labels)
    _mask_volume(labels[..., 0] if labels.ndim == 4 else labels, **change).geometry.apply_to(image)
    sitk.WriteImage(image, str(path), True)
    return path


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def _fewer_slices(folder: Path) -> Path:
    labels = _labels(shape=(4, *SHAPE[1:]))
    return write_labels_nifti(labels, _mask_volume(labels), folder / "m_seg.nii.gz")


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

#: id -> (builder(folder, image path) -> mask path, text the message must contain)
MASK_ERRORS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "fewer_slices": (lambda d, _: _fewer_slices(d), "size 40x30x4 vs 40x30x5"),
    "other_spacing": (lambda d, _: _write_mask(d / "m_seg.nii.gz", _labels(), spacing=(0.7, 0.9, 3.0)), "spacing"),
    "other_origin": (lambda d, _: _write_mask(d / "m_seg.nii.gz", _labels(), origin=(0.0, 0.0, 0.0)), "origin"),
    "other_direction": (lambda d, _: _write_mask(d / "m_seg.nii.gz", _labels(), direction=IDENTITY), "orientation"),
    "png_for_a_volume": (lambda d, _: _png(d / "m_seg.png", _labels()[1]), "size 40x30x1 vs 40x30x5"),
    "colour_picture": (lambda d, _: rgba_png(d), "colour image"),
    "zero_byte": (lambda d, _: (d / "m_seg.nii.gz").write_bytes(b"") or d / "m_seg.nii.gz", "empty"),
    "truncated": (lambda d, _: truncated_nifti(d), "truncated"),
    "object_npz": (lambda d, _: npz_object_array(d), "Python objects"),
    "four_d": (lambda d, _: write_nifti(d / "m_seg.nii.gz", np.zeros((2, *SHAPE), np.uint8)), "4D"),
    "fractional": (lambda d, _: _write_mask(d / "m_seg.nii.gz", _labels(np.float32) * 0.5), "fractional"),
    "negative": (lambda d, _: _write_mask(d / "m_seg.nii.gz", -_labels(np.int16)), "negative"),
    "above_65535": (lambda d, _: _write_mask(d / "m_seg.nii.gz", _labels(np.uint32) * 70000), "65535"),
    "the_image_itself": (lambda d, image: image, "negative"),  # picked the CT instead of its mask
}


@pytest.mark.parametrize("case", sorted(MASK_ERRORS))
def test_bad_mask_is_refused_and_the_labels_are_untouched(app, rec, qtbot, tmp_path, monkeypatch, case):
    build, text = MASK_ERRORS[case]
    (tmp_path / "in").mkdir()
    path = build(tmp_path / "in", app.session.volume.source_path)
    before = Before.of(app)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    assert app.act_open_mask.isEnabled()
    app.act_open_mask.trigger()  # synchronous: the mask was read and refused on the GUI thread when it returns
    assert_one_line_message(rec, "Cannot open mask", text, names=path.name)
    before.assert_unchanged(app)
    assert not (tmp_path / "in" / "PWNED").exists(), "an object array was unpickled"
    assert_still_usable(app, qtbot)


def test_good_mask_opens_as_one_undo_step(app, rec, qtbot, tmp_path, monkeypatch):
    """The same route with a fitting mask (so the refusals above are not a broken route)."""
    labels = _labels()
    labels[3, 10:12, 10:20] = 2
    path = _write_mask(tmp_path / "m_seg.nii.gz", labels)
    steps = len(app.session.history)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    app.act_open_mask.trigger()
    assert not rec.shown and not rec.exceptions
    np.testing.assert_array_equal(app.session.labels, labels)
    assert len(app.session.history) == steps  # the redo step is replaced by the mask step
    app.undo()
    assert app.session.labels[2].any() and app.session.labels[3].any()


# --- File › Save labels… -------------------------------------------------------------------------------------


def _deny_writes_in(folder: Path, monkeypatch) -> None:
    """Make ``folder`` read-only. Root ignores permission bits, so then creating files there fails as the OS
    would fail for a normal user (EACCES from the temporary file the atomic writer creates)."""
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() != 0:
        return
    real = tempfile.mkstemp

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        target = Path(str(kwargs.get("dir") or (args[2] if len(args) > 2 else ".")))
        if target.resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _save_via_menu(window, path: Path, monkeypatch) -> None:
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))
    assert window.act_save.isEnabled()
    window.act_save.trigger()


#: id -> (prepare(folder) -> target path, text the message must contain)
SAVE_ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing_folder": (lambda d: d / "gone" / "base_seg.nii.gz", "folder missing"),
    "folder_is_a_file": (lambda d: (d / "notes").write_text("x") and d / "notes" / "base_seg.nii.gz", "folder"),
    "over_the_image": (lambda d: d.parent / "base.nii.gz", "overwrite the original image"),
}


@pytest.mark.parametrize("case", sorted(SAVE_ERRORS))
def test_failed_save_shows_one_line_and_keeps_the_session(app, rec, qtbot, tmp_path, monkeypatch, case):
    prepare, text = SAVE_ERRORS[case]
    (tmp_path / "out").mkdir()
    target = prepare(tmp_path / "out")
    image_bytes = (tmp_path / "base.nii.gz").read_bytes()
    before = Before.of(app)
    _save_via_menu(app, target, monkeypatch)
    assert_one_line_message(rec, "Cannot save", text, names=target.name)
    before.assert_unchanged(app)  # still dirty: closing will still ask
    assert (tmp_path / "base.nii.gz").read_bytes() == image_bytes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == (["notes"] if case == "folder_is_a_file" else [])


def test_save_to_an_unwritable_folder_keeps_the_previous_file(app, rec, qtbot, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "base_seg.nii.gz"
    _save_via_menu(app, target, monkeypatch)
    assert not rec.shown and not app.session.dirty
    saved = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(saved) == ["base_seg.json", "base_seg.nii.gz"]
    mask = np.zeros(SHAPE[1:], bool)
    mask[1:4, 1:4] = True
    app.session.apply_mask(4, mask)  # a new, unsaved edit
    _deny_writes_in(out, monkeypatch)
    try:
        before = Before.of(app)
        _save_via_menu(app, target, monkeypatch)
        assert_one_line_message(rec, "Cannot save", "read-only", names=target.name)
        before.assert_unchanged(app)
        assert app.session.dirty
        assert {p.name: p.read_bytes() for p in out.iterdir()} == saved, "the previous file was changed"
        assert sidecar_path(target).read_bytes() == saved["base_seg.json"]
    finally:
        out.chmod(stat.S_IRWXU)


#: id -> sidecar text next to a fitting mask: unusable names/colours are ignored, the mask still opens
BAD_SIDECARS = {
    "not_json": "{labels: oops",
    "a_list": "[1, 2, 3]",
    "labels_not_a_list": '{"format": "medsam-desktop-labels", "version": 1, "labels": 5}',
    "two_colour_components": '{"format": "medsam-desktop-labels", "version": 1, "labels": '
    '[{"id": 1, "name": "liver", "color": [255, 0]}]}',
    "colour_out_of_range": '{"format": "medsam-desktop-labels", "version": 1, "labels": '
    '[{"id": 1, "name": "liver", "color": [999, -5, 0]}]}',
    "id_out_of_range": '{"format": "medsam-desktop-labels", "version": 1, "labels": '
    '[{"id": 0, "name": "bg", "color": [1, 2, 3]}, {"id": 70000, "name": "x", "color": [1, 2, 3]}]}',
    "opacity_nan": '{"format": "medsam-desktop-labels", "version": 1, "labels": '
    '[{"id": 1, "name": "liver", "color": [1, 2, 3], "opacity": NaN}]}',
    "not_utf8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_mask_with_a_bad_sidecar_opens_with_default_names(app, rec, qtbot, tmp_path, monkeypatch, case):
    labels = _labels()
    path = _write_mask(tmp_path / "m_seg.nii.gz", labels)
    text = BAD_SIDECARS[case]
    side = sidecar_path(path)
    side.write_bytes(text) if isinstance(text, bytes) else side.write_text(text)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    app.act_open_mask.trigger()
    app.view.refresh()
    app.view.grab()  # paints the view now: a bad colour would raise while drawing
    assert not rec.shown and not rec.exceptions, (rec.shown, rec.exceptions)
    np.testing.assert_array_equal(app.session.labels, labels)
    for label in app.session.table:
        assert 1 <= label.id <= 65535 and len(label.color) == 3 and all(0 <= c <= 255 for c in label.color)
        assert 0.0 <= label.opacity <= 1.0


# --- folders without a usable series, and a recent file that is gone ----------------------------------------


def _folder(tmp: Path, files: dict[str, bytes]) -> Path:
    folder = tmp / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


#: id -> (folder builder, text the message must contain)
FOLDER_ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (lambda t: _folder(t, {}), "DICOM"),
    "text_files_only": (lambda t: _folder(t, {"a.txt": b"hello", "b.dcm": b"not dicom at all"}), "DICOM"),
    "pictures_only": (lambda t: rgba_png(_folder(t, {})).parent, "DICOM"),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", sorted(FOLDER_ERRORS))
def test_folder_without_a_series_is_refused(app, rec, qtbot, tmp_path, monkeypatch, route, case):
    build, text = FOLDER_ERRORS[case]
    path = build(tmp_path)
    before = Before.of(app)
    open_via(route, app, path, monkeypatch)
    wait_idle(app, qtbot, lambda: bool(rec.errors))
    assert_one_line_message(rec, "Cannot open", text, names=path.name)
    before.assert_unchanged(app)


def test_recent_file_that_was_deleted(app, rec, qtbot, tmp_path):
    path = write_nifti(tmp_path / "old.nii.gz", np.zeros((3, 20, 20), np.int16))
    app.file_actions.add_recent(str(path))
    path.unlink()
    before = Before.of(app)
    app.file_actions.fill_recent_menu()
    action = next(a for a in app.recent_menu.actions() if a.text() == str(path.resolve()))
    action.trigger()
    wait_idle(app, qtbot, lambda: bool(rec.errors))
    assert_one_line_message(rec, "Cannot open", "does not exist", names=path.name)
    before.assert_unchanged(app)


# --- failures nobody foresaw (a bug, a full memory) are still one actionable line ----------------------------

UNEXPECTED: dict[str, BaseException] = {
    "bug": RuntimeError('boom\n  File "reader.py", line 3, in read\nKeyError: <object at 0x7f>'),
    "memory": MemoryError(),
}


@pytest.mark.parametrize("kind", sorted(UNEXPECTED))
def test_unexpected_read_failure(app, rec, qtbot, tmp_path, monkeypatch, kind):
    def broken(path: Path, uid: str | None) -> Volume:
        raise UNEXPECTED[kind]

    app.loader.reader = broken
    before = Before.of(app)
    open_via("drop", app, write_nifti(tmp_path / "ok.nii.gz", np.zeros((3, 20, 20), np.int16)), monkeypatch)
    wait_idle(app, qtbot, lambda: bool(rec.errors))
    assert_one_line_message(rec, "Cannot open", "memory" if kind == "memory" else "unexpected", names="ok.nii.gz")
    before.assert_unchanged(app)


@pytest.mark.parametrize("kind", sorted(UNEXPECTED))
def test_unexpected_mask_failure(app, rec, qtbot, tmp_path, monkeypatch, kind):
    from medsam_desktop.core.document import files

    def broken(path: Path, reference: Volume) -> np.ndarray:
        raise UNEXPECTED[kind]

    monkeypatch.setattr(files, "read_labels", broken)
    path = _write_mask(tmp_path / "m_seg.nii.gz", _labels())
    before = Before.of(app)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    app.act_open_mask.trigger()  # synchronous: the failure was reported when it returns
    assert_one_line_message(rec, "Cannot open mask", "memory" if kind == "memory" else "unexpected", names=path.name)
    before.assert_unchanged(app)


@pytest.mark.parametrize("kind", sorted(UNEXPECTED))
def test_unexpected_save_failure(app, rec, qtbot, tmp_path, monkeypatch, kind):
    from medsam_desktop.core.document import files

    def broken(labels: np.ndarray, reference: Volume, path: Path) -> Path:
        raise UNEXPECTED[kind]

    monkeypatch.setattr(files, "write_labels_nifti", broken)
    before = Before.of(app)
    _save_via_menu(app, tmp_path / "base_seg.nii.gz", monkeypatch)
    assert_one_line_message(rec, "Cannot save", "memory" if kind == "memory" else "unexpected", names="base_seg")
    before.assert_unchanged(app)
    assert not (tmp_path / "base_seg.nii.gz").exists() and not (tmp_path / "base_seg.json").exists()


def test_last_resort_hook_shows_one_line_without_the_exception_text(monkeypatch, qapp, caplog):
    """The app's sys.excepthook (a slot that raises) logs the traceback and shows one plain line."""
    import sys

    from medsam_desktop.ui import app as app_module

    shown: list[str] = []
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, message: shown.append(message))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    app_module._install_excepthook()
    try:
        raise KeyError("<secret object at 0x7f>")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    assert len(shown) == 1 and "\n" not in shown[0] and not LEAKS.search(shown[0]) and "secret" not in shown[0]
    assert "restart" in shown[0] and any(r.exc_info for r in caplog.records)  # the details are in the log


# --- a mask of another size or spacing, opened onto a window's image ----------------------------------------


@pytest.mark.parametrize("kind", ["size", "spacing"])
def test_a_mask_of_another_geometry_is_refused_in_one_line(qtbot, make_window, tmp_path, errors, kind) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    session.apply_mask(4, np.ones((60, 80), bool), session.ensure_active_label())
    before, steps = session.labels.copy(), len(session.history)
    other = tmp_path / "masks"
    other.mkdir()
    shape, spacing = ((9, 60, 81), (0.7, 1.3, 2.5)) if kind == "size" else ((9, 60, 80), (0.7, 1.3, 3.0))
    image = sitk.GetImageFromArray(np.ones(shape, np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    sitk.WriteImage(image, str(other / "m_seg.nii.gz"))
    assert not window.file_actions.open_mask(other / "m_seg.nii.gz")
    assert len(errors) == 1 and "does not fit" in errors[0] and "\n" not in errors[0]
    assert np.array_equal(session.labels, before) and len(session.history) == steps
