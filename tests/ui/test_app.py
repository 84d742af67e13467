"""The desktop app with fake encoders: opening files, box drawing, worker staleness and responsiveness, export."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PyQt6.QtCore import QPoint, Qt, QTimer
from window_helpers import BOX, drain_worker, open_synthetic, pt

from medsam_desktop.io import Volume, read_image, read_labels
from medsam_desktop.model.checkpoint import ModelNotAvailableError
from medsam_desktop.ui import dialogs
from medsam_desktop.ui.slice_view import Tool
from medsam_desktop.ui.worker import SegmentationWorker


def synthetic_nifti(tmp_path: Path, shape=(9, 60, 80), modality_ct: bool = True) -> Path:
    """A CT-like int16 volume with non-trivial spacing, origin and direction."""
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1000, size=shape).astype(np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((-12.5, 30.25, 7.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def drag(qtbot, view, start: tuple[float, float], end: tuple[float, float], button=Qt.MouseButton.LeftButton) -> None:
    """Press at image pixel ``start``, move, release at ``end`` (pixel coordinates of the displayed slice)."""
    vp = view.viewport()
    a, b = view.pixel_to_widget(*start), view.pixel_to_widget(*end)
    pa, pb = QPoint(round(a.x()), round(a.y())), QPoint(round(b.x()), round(b.y()))
    qtbot.mousePress(vp, button, pos=pa)
    qtbot.mouseMove(vp, pos=(pa + pb) / 2)
    qtbot.mouseMove(vp, pos=pb)
    qtbot.mouseRelease(vp, button, pos=pb)


def test_open_synthetic_and_drag_box_in_pixel_coordinates(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    assert window.open_path_and_wait(synthetic_nifti(tmp_path))
    view = window.view
    assert view.session is not None and view.axial_z == 4
    with qtbot.waitSignal(view.box_drawn, timeout=3000) as blocker:
        drag(qtbot, view, (10.5, 20.5), (40.5, 50.5))
    z, box = blocker.args
    assert z == 4 and box.tolist() == [10, 20, 40, 50]
    assert window.cursor_label.text().startswith("x 40  y 50  z 4  value")
    # the fake model returns the box itself: the mask lands on the shown slice, in the active label
    qtbot.waitUntil(lambda: window.session.labels[4].any(), timeout=5000)
    ys, xs = np.nonzero(window.session.labels[4])
    assert abs(xs.min() - 10) <= 1 and abs(xs.max() - 40) <= 1 and abs(ys.min() - 20) <= 1 and abs(ys.max() - 50) <= 1
    assert window.session.dirty and window.isWindowModified()
    window.undo()
    assert not window.session.labels.any()


def test_brush_wheel_and_window_level(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    view = window.view
    window.set_tool(Tool.BRUSH)
    drag(qtbot, view, (20.5, 20.5), (30.5, 20.5))
    assert window.session.labels[4, 20, 20:31].all() and len(window.session.history) == 2  # add label + stroke
    level, width = view.level, view.width
    drag(qtbot, view, (20.5, 20.5), (40.5, 30.5), button=Qt.MouseButton.RightButton)
    assert (view.level, view.width) != (level, width)
    qtbot.keyClick(view, Qt.Key.Key_PageUp)
    assert view.axial_z == 5
    window.set_orientation("coronal")  # the coronal view: keys act on it, window/level is the volume's
    assert window.view.image.image.shape == (9, 80)
    assert (window.view.level, window.view.width) == (view.level, view.width)
    window.set_orientation("axial")


def test_each_raw_file_opens(qtbot, make_window, raw_dir, errors) -> None:
    window = make_window()
    paths = sorted(p for p in raw_dir.iterdir() if p.name != "README.md")
    failed = []
    for path in paths:
        n_errors = len(errors)
        ok = window.open_path_and_wait(path)
        if not ok:
            assert len(errors) == n_errors + 1 and "Traceback" not in errors[-1] and "\n" not in errors[-1]
            failed.append((path.name, errors[-1]))
            continue
        assert window.session is not None and window.view.image.image is not None
        _, h, w = window.session.shape
        assert window.view.image.image.shape[:2] == (h, w)
    assert all(name.startswith("US_") for name, _ in failed), failed  # JPEG ultrasound may need a decoder


def test_stale_worker_results_are_ignored(qtbot, fake) -> None:
    worker = SegmentationWorker(lambda: fake(delay=0.2), prefetch=0)
    try:
        vol = Volume(np.zeros((4, 32, 32), np.uint8))
        worker.set_volume(vol)
        got: list[int] = []
        worker.mask_ready.connect(lambda rid, z, m: got.append(rid))
        first = worker.segment(1, np.array([2, 2, 20, 20]))
        second = worker.segment(2, np.array([2, 2, 20, 20]))
        with qtbot.waitSignal(worker.mask_ready, timeout=5000):
            pass
        drain_worker(qtbot, worker)  # both requests have ended and whatever they emitted has been handled
        assert got == [second] and first < second
    finally:
        assert worker.shutdown()


def test_result_for_a_slice_no_longer_shown_is_dropped(qtbot, fake, make_window, tmp_path) -> None:
    window = make_window(fake(delay=0.3))
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    window.view.box_drawn.emit(4, np.array([5.0, 5.0, 30.0, 30.0]))
    window.view.set_slice(6)  # newer request: the box result is stale
    with qtbot.waitSignal(window.worker.encoded, timeout=5000):
        pass
    drain_worker(qtbot, window.worker)  # the box's request has ended and its result (if any) was handled
    assert not window.session.labels.any()


def test_gui_stays_responsive_with_a_slow_encoder(qtbot, fake, make_window, tmp_path) -> None:
    """An encode in progress never holds the event loop: each one waits until a GUI timer, firing after the encode
    started, lets it finish (run on the GUI thread or blocking it, the encode would never be let go). How long the
    loop may pause is a wall-clock figure for a benchmark, not asserted here."""
    started, release = threading.Event(), threading.Event()
    released: list[bool] = []

    class GatedBackend(fake):
        def encode(self, images: np.ndarray) -> np.ndarray:
            release.clear()
            started.set()
            released.append(release.wait(30))
            return super().encode(images)

    def tick() -> None:
        if started.is_set():
            started.clear()
            release.set()

    backend = GatedBackend()
    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    window = make_window(backend)
    window.open_path_and_wait(synthetic_nifti(tmp_path))  # posts an encode of the shown slice
    window.view.box_drawn.emit(4, np.array([5.0, 5.0, 30.0, 30.0]))
    with qtbot.waitSignal(window.worker.mask_ready, timeout=40000):
        pass
    timer.stop()
    assert released and all(released), released  # every encode was let go by the running event loop
    assert backend.on_main_thread == {False}  # inference never runs on the GUI thread
    qtbot.waitUntil(lambda: window.session.labels[4].any(), timeout=2000)


def test_propagation_is_one_undo_step_and_can_be_cancelled(qtbot, fake, make_window, tmp_path) -> None:
    window = make_window()
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    window.view.last_box = (4, np.array([10.0, 10.0, 40.0, 40.0]))
    steps = len(window.session.history)
    window.propagate(below=2, above=3)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000) as blocker:
        pass
    assert blocker.args[3] is False
    filled = window.session.labels.any(axis=(1, 2))
    assert filled.tolist() == [False, False, True, True, True, True, True, True, False]
    assert len(window.session.history) == steps + 2  # 'add label' + the propagation
    window.undo()
    assert not window.session.labels.any()

    slow = make_window(fake(delay=0.2))
    slow.open_path_and_wait(synthetic_nifti(tmp_path))
    slow.view.last_box = (4, np.array([10.0, 10.0, 40.0, 40.0]))
    with qtbot.waitSignal(slow.worker.slice_done, timeout=10000):
        slow.propagate(below=4, above=4)  # cancel once the first slice is in, whatever the machine's load
    slow.worker.cancel()
    with qtbot.waitSignal(slow.worker.propagation_finished, timeout=10000) as blocker:
        pass
    assert blocker.args[3] is True
    assert 0 < slow.session.labels.any(axis=(1, 2)).sum() < 9


def test_export_reread_identical_labels_and_geometry(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    src = synthetic_nifti(tmp_path)
    window.open_path_and_wait(src)
    s = window.session
    s.add_label("liver")
    mask = np.zeros((60, 80), bool)
    mask[10:30, 5:50] = True
    s.apply_mask(3, mask)
    s.add_label("spleen")
    s.apply_mask(5, mask)
    out = tmp_path / "out" / "case_seg.nii.gz"
    out.parent.mkdir()
    assert window.file_actions.save_labels(out) and not s.dirty
    np.testing.assert_array_equal(read_labels(out, s.volume), s.labels)
    saved, ref = read_image(out), read_image(src)
    np.testing.assert_allclose(saved.spacing, ref.spacing, atol=1e-6)
    np.testing.assert_allclose(saved.origin, ref.origin, atol=1e-6)
    np.testing.assert_allclose(saved.direction, ref.direction, atol=1e-6)
    assert "spleen" in (tmp_path / "out" / "case_seg.json").read_text()
    assert not window.file_actions.save_labels(src)  # never overwrites the source image
    # re-open the mask onto a fresh copy of the image: same labels and names
    window.open_path_and_wait(src)
    assert window.file_actions.open_mask(out)
    np.testing.assert_array_equal(window.session.labels, read_labels(out, s.volume))
    assert [lb.name for lb in window.session.table] == ["liver", "spleen"]


def test_closing_with_unsaved_work_asks_and_worker_stops(qtbot, make_window, tmp_path, monkeypatch) -> None:
    window = make_window()
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    window.session.add_label()
    asked: list[str] = []
    answer = "cancel"

    def ask(parent) -> str:
        asked.append(answer)
        return answer

    monkeypatch.setattr(dialogs, "ask_save_changes", ask)
    assert not window.close()
    assert window.isVisible() and asked == ["cancel"] and window.worker.thread.isRunning()
    answer = "discard"
    assert window.close()
    assert asked == ["cancel", "discard"] and window.worker.thread.isFinished()


def test_missing_model_is_reported_once_and_editing_still_works(qtbot, make_window, tmp_path, errors) -> None:
    window = make_window(ModelNotAvailableError("no model weights found"))
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    qtbot.waitUntil(lambda: window.model_label.text() == "model: unavailable", timeout=5000)
    assert errors == []  # opening an image never nags; the first box does, once
    window.view.box_drawn.emit(4, np.array([5.0, 5.0, 30.0, 30.0]))
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=5000)
    assert "no model weights found" in errors[0] and window.model_label.text() == "model: unavailable"
    with qtbot.waitSignal(window.worker.failed, timeout=5000):  # the second box was answered, without a dialog
        window.view.box_drawn.emit(4, np.array([5.0, 5.0, 30.0, 30.0]))
    assert len(errors) == 1
    window.set_tool(Tool.BRUSH)
    drag(qtbot, window.view, (20.5, 20.5), (25.5, 20.5))
    assert window.session.labels[4].any()


@pytest.mark.parametrize("key", ["ct-vertebra"])
def test_open_sample(qtbot, make_window, key) -> None:
    pytest.importorskip("pydicom")
    window = make_window()
    assert window.file_actions.open_sample(key)
    qtbot.waitUntil(lambda: window.session is not None and window.view.last_box is not None, timeout=10000)
    assert window.session.volume.is_2d and window.view.last_box is not None


def test_labels_panel_add_rename_hide_select(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    panel, s = window.labels_panel, window.session
    qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.list.count() == 2, timeout=2000)
    assert s.active_label == 2 and panel.selected_id() == 2
    panel.list.item(0).setText("liver")
    qtbot.waitUntil(lambda: panel.list.count() == 2 and panel.list.item(0).text() == "liver", timeout=2000)
    assert s.table.get(1).name == "liver"
    panel.list.item(1).setCheckState(Qt.CheckState.Unchecked)
    qtbot.waitUntil(lambda: not s.table.get(2).visible, timeout=2000)
    panel.list.setCurrentRow(0)
    assert s.active_label == 1
    panel.opacity.setValue(20)
    assert s.table.get(1).opacity == pytest.approx(0.2)
    s.undo()  # undo the rename
    qtbot.waitUntil(lambda: panel.list.item(0).text() == "Label 1", timeout=2000)


def test_prefetch_fills_the_cache_with_neighbours(qtbot, fake) -> None:
    backend = fake()
    worker = SegmentationWorker(lambda: backend, prefetch=2)
    try:
        worker.set_volume(Volume(np.zeros((6, 32, 32), np.uint8)))
        with qtbot.waitSignal(worker.encoded, timeout=5000):
            worker.encode(2)
        qtbot.waitUntil(lambda: len(worker.cache) == 5, timeout=5000)  # 2, then 3, 1, 4, 0
        assert backend.encodes == 5
    finally:
        assert worker.shutdown()


def test_save_png_for_2d(qtbot, make_window, tmp_path) -> None:
    from PIL import Image

    src = tmp_path / "pic.png"
    Image.fromarray(np.arange(40 * 50, dtype=np.uint32).reshape(40, 50).astype(np.uint8)).save(src)
    window = make_window()
    window.open_path_and_wait(src)
    mask = np.zeros((40, 50), bool)
    mask[5:15, 5:25] = True
    window.session.apply_mask(0, mask)
    out = tmp_path / "pic_seg.png"
    assert window.file_actions.save_labels(out)
    np.testing.assert_array_equal(read_labels(out, window.session.volume), window.session.labels)


def test_settings_roundtrip_and_apply(qtbot, make_window, store, tmp_path) -> None:
    from medsam_desktop.core.document.annotation import OverlapRule
    from medsam_desktop.ui.settings_dialog import AppSettings

    window = make_window()
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    window.apply_settings(AppSettings(model="auto", threads=1, cache_mb=64, overlap="background"))
    assert AppSettings.load(store) == AppSettings("auto", 1, 64, "background")
    assert window.session.overlap is OverlapRule.BACKGROUND and window.worker.cache.max_bytes == 64 * 2**20


def test_drop_a_file_opens_it_and_sample_box_segments(qtbot, make_window, tmp_path) -> None:
    from PyQt6.QtCore import QMimeData, QPointF, QUrl
    from PyQt6.QtGui import QDropEvent

    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(synthetic_nifti(tmp_path)))])
    event = QDropEvent(
        QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.session is not None, timeout=3000)
    window.view.last_box = (window.view.axial_z, np.array([3.0, 3.0, 20.0, 20.0]))
    window.segment_last_box()
    qtbot.waitUntil(lambda: window.session.labels[4].any(), timeout=3000)


def test_module_entry_point_help() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "medsam_desktop", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "medsam-desktop" in proc.stdout


def test_dicom_folder_with_two_series_asks_which(raw_dir, tmp_path) -> None:
    import shutil

    from medsam_desktop.core.document import files

    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(raw_dir / name, tmp_path / name)
    offered: list[int] = []

    def choose(series):
        offered.append(len(series))
        return next(s for s in series if s.modality == "MR")

    volume = files.load_image(tmp_path, choose)
    assert offered == [2] and volume.modality == "MR" and volume.shape_zyx == (1, 64, 64)
    assert files.load_image(tmp_path, lambda series: None) is None


def test_propagation_without_model_resets_the_ui(qtbot, make_window, tmp_path, errors) -> None:
    window = make_window(ModelNotAvailableError("no model weights found"))
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    window.view.last_box = (4, np.array([10.0, 10.0, 40.0, 40.0]))
    window.propagate(below=1, above=1)
    assert not window.act_propagate.isEnabled()
    qtbot.waitUntil(lambda: not window.segmentation.propagating and window.act_propagate.isEnabled(), timeout=5000)
    assert len(errors) == 1 and not window.session.labels.any()


def test_menu_actions_window_presets_recent_and_samples(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    src = synthetic_nifti(tmp_path)
    window.open_path_and_wait(src)
    lung = next(a for a in window.window_menu.actions() if a.text() == "CT lung")
    lung.trigger()
    assert (window.view.level, window.view.width) == (-600.0, 1500.0)
    window.file_actions.fill_recent_menu()
    recent = window.recent_menu.actions()
    assert [a.text() for a in recent] == [str(src.resolve())]
    window.session.mark_saved()
    with qtbot.waitSignal(window.loader.loaded, timeout=5000):
        recent[0].trigger()
    assert window.session.volume.source_path.resolve() == src.resolve()
    window.file_actions.fill_samples_menu()
    samples = window.samples_menu.actions()
    assert samples
    if importlib.util.find_spec("pydicom") is not None:
        with qtbot.waitSignal(window.loader.loaded, timeout=10000):
            samples[0].trigger()
        assert window.session.volume.is_2d


def test_model_input_follows_the_displayed_ct_window(qtbot, fake, make_window, tmp_path) -> None:
    from medsam_desktop.core.inference.intensity import window as ct_window
    from medsam_desktop.core.inference.model_input import ModelInput

    arr = np.random.default_rng(2).integers(-1000, 1000, size=(3, 16, 16)).astype(np.int16)
    lazy = ModelInput(Volume(arr, modality="CT"))
    assert lazy.mapping == (40.0, 400.0)
    np.testing.assert_array_equal(lazy[1], ct_window(arr[1], 40, 400))
    assert lazy.set_ct_window(-600, 1500) and not lazy.set_ct_window(-600, 1500)
    np.testing.assert_array_equal(lazy[1], ct_window(arr[1], -600, 1500))
    assert ModelInput(Volume(arr, modality="MR")).mapping is None  # MR/PET keep the percentile mapping
    # in the window: a new window re-encodes the shown slice under a new cache key (no stale embedding reuse)
    backend = fake()
    window = make_window(backend)
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    qtbot.waitUntil(lambda: backend.encodes == 1, timeout=3000)
    window.view.set_window(-600.0, 1500.0)
    window.view.box_drawn.emit(4, np.array([5.0, 5.0, 30.0, 30.0]))  # before the debounce: applied at once
    qtbot.waitUntil(lambda: window.session.labels[4].any(), timeout=3000)
    assert backend.encodes == 2 and len(window.worker.cache) == 2
    keys = {k[1][0][1] for k in window.worker.cache._data}
    assert keys == {(40.0, 400.0), (-600.0, 1500.0)}


def test_threads_change_live_without_reloading_the_model(qtbot, fake, make_window, tmp_path, monkeypatch) -> None:
    import types

    from medsam_desktop.ui.settings_dialog import AppSettings

    calls: list[int] = []
    fake_torch = types.SimpleNamespace(set_num_threads=calls.append, get_num_threads=lambda: calls[-1])
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    backend = fake()
    window = make_window(backend)
    window._custom_factory = None  # as in the real app: a model change would reload
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    qtbot.waitUntil(lambda: len(window.worker.cache) == 1, timeout=3000)
    window.settings.runtime = "torch"  # torch takes a thread count live; OpenVINO compiles it in (a reload)
    window.apply_settings(AppSettings(model=window.settings.model, threads=1, cache_mb=window.settings.cache_mb,
                                      runtime="torch"))  # fmt: skip
    qtbot.waitUntil(lambda: calls == [1], timeout=3000)
    assert len(window.worker.cache) == 1 and window.model_label.text() == "model: fake"  # nothing reloaded


def test_help_lists_every_shortcut_and_empty_window_says_what_to_do(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    assert window.view.hint.isVisible() and "Open" in window.view.hint.text()
    rows = dict(window.shortcut_rows())
    for act in window.actions():
        for seq in act.shortcuts():
            assert any(seq.toString() in keys for keys in rows), act.text()
    assert {"F1", "Ctrl+P", "Esc", "0", "["}.issubset({k for keys in rows for k in keys.split(" / ")})
    window.open_path_and_wait(synthetic_nifti(tmp_path))
    assert not window.view.hint.isVisible()


# --- a model that fails to load, corrupt stored settings --------------------------------------------------


def test_a_model_that_fails_to_load_then_normal_editing(qtbot, make_window, tmp_path, errors, excepthook) -> None:
    window = make_window(RuntimeError("weights\nare corrupt"))
    session = open_synthetic(window, tmp_path)
    window.view.last_box = (4, BOX.copy())
    window.propagate(below=1, above=1)
    qtbot.waitUntil(lambda: not window.segmentation.propagating and window.act_propagate.isEnabled(), timeout=5000)
    assert len(errors) == 1 and "weights are corrupt" in errors[0] and window.model_label.text() == "model: unavailable"
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))
    painted = session.labels.copy()
    assert painted[4].any()
    window.undo()
    assert not session.labels.any()
    window.redo()
    assert np.array_equal(session.labels, painted) and len(errors) == 1
    assert excepthook == []


def test_corrupt_stored_settings_do_not_stop_the_app(qtbot, store, make_window, tmp_path) -> None:
    store.setValue("model/cache_mb", -5)
    store.setValue("model/threads", -3)
    store.sync()
    window = make_window()
    assert window.settings.cache_mb == 0 and window.settings.threads == 0
    session = open_synthetic(window, tmp_path)
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    assert session.labels[4].any()
