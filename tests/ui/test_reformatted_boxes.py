"""Boxes, masks and propagation on the coronal and sagittal views (issue #4), with exact fake models."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, Qt
from window_helpers import drain_worker

from medsam_desktop.core.document.annotation import OverlapRule
from medsam_desktop.core.inference.intensity import to_display_uint8
from medsam_desktop.core.inference.model_input import ModelInput
from medsam_desktop.core.inference.preprocess import preprocess
from medsam_desktop.core.inference.reformat import Plane
from medsam_desktop.io import Volume
from medsam_desktop.ui.worker import SegmentationWorker

# 12 slices of 64 x 64: every plane (axial 64x64, coronal/sagittal 12x64) has its longest PHYSICAL side along
# its 64 columns, so the model frame is exactly 4x the image frame along columns; rows of the reformatted
# planes are stretched to their physical size (2.5 mm slices), by SCALES[orientation][1] model px per row.
D, H, W = 12, 64, 64
SPACING = (0.7, 1.3, 2.5)  # x, y, z mm: anisotropic in every plane
SCALES = {  # (sx, sy) model-frame pixels per plane pixel, by hand: 256 / 64 columns; rows * row mm / col mm
    "axial": (4.0, 4.0 * 1.3 / 0.7),
    "coronal": (4.0, 4.0 * 2.5 / 0.7),
    "sagittal": (4.0, 4.0 * 2.5 / 1.3),
}
UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # slice axis points superior: coronal/sagittal rows flipped
DOWN = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # not flipped


def volume(direction=UP, cuboid: bool = False) -> Volume:
    """CT-like int16 volume; with ``cuboid`` a 200 HU box (z 3..8, y 20..40, x 10..30) in -1000 HU air."""
    if cuboid:
        arr = np.full((D, H, W), -1000, np.int16)
        arr[3:9, 20:41, 10:31] = 200
    else:
        arr = np.random.default_rng(0).integers(-1000, 1000, size=(D, H, W)).astype(np.int16)
    return Volume(arr, spacing=SPACING, direction=direction, modality="CT")


@pytest.fixture
def box_fake(fake):
    """Decoded mask == the inclusive prompt box; with ``objects`` also == the bright pixels.

    ``scale`` = (sx, sy) model px per image px (default 4: square 64-pixel planes): the model-frame pixels whose
    centres lie in the image pixels of the inclusive box are set. The encoder stores the model input (256 x 256,
    channel 0) in the embedding so that decode can see it.
    """

    class BoxFake(fake):
        def __init__(self, delay: float = 0.0, objects: bool = False, scale: tuple[float, float] = (4.0, 4.0)):
            super().__init__(delay)
            self.objects = objects
            self.scale = scale
            self.inputs: list[np.ndarray] = []

        def encode(self, images: np.ndarray) -> np.ndarray:
            out = super().encode(images)
            self.inputs.append(images[0].copy())
            out[0, :16] = images[0, 0].reshape(16, 64, 64)
            return out

        def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            boxes = np.asarray(boxes).reshape(-1, 4)
            image = np.asarray(embedding[0, :16], np.float32).reshape(256, 256)
            logits = np.full((len(boxes), 256, 256), -10.0, np.float32)
            sx, sy = self.scale
            for i, (x0, y0, x1, y1) in enumerate(boxes):
                inside = np.zeros((256, 256), bool)
                rows = slice(int(np.ceil(y0 - 0.5)), int(np.floor(y1 + sy - 0.5)) + 1)
                cols = slice(int(np.ceil(x0 - 0.5)), int(np.floor(x1 + sx - 0.5)) + 1)
                inside[rows, cols] = True
                if self.objects:
                    inside &= image > 0.5
                logits[i][inside] = 10.0
            return logits, np.ones(len(boxes), np.float32)

    return BoxFake


def drag(qtbot, view, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Left-drag from plane pixel ``start`` to ``end`` (as a user would, through widget positions)."""
    vp = view.viewport()
    a, b = view.pixel_to_widget(*start), view.pixel_to_widget(*end)
    pa, pb = QPoint(round(a.x()), round(a.y())), QPoint(round(b.x()), round(b.y()))
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pa)
    qtbot.mouseMove(vp, pos=(pa + pb) / 2)
    qtbot.mouseMove(vp, pos=pb)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pb)


def open_volume(window, vol: Volume, orientation: str, index: int) -> None:
    window.set_volume(vol)
    window.set_orientation(orientation)
    window.view.set_slice(index)
    assert window.view.current == index


@pytest.mark.parametrize(
    ("orientation", "index", "aspect", "voxel"),
    [
        # plane pixel (40, 8) -> voxel (x, y, z); rows are z reversed (superior up): z = 11 - 8 = 3
        ("coronal", 17, (30 * 0.7) / (6 * 2.5), "x 40  y 17  z 3"),
        ("sagittal", 50, (30 * 1.3) / (6 * 2.5), "x 50  y 40  z 3"),
    ],
)
def test_drag_on_a_reformatted_view_gives_the_box_in_plane_pixels(
    qtbot, make_window, orientation, index, aspect, voxel
) -> None:
    window = make_window()
    open_volume(window, volume(), orientation, index)
    view = window.view
    assert view.image.image.shape == (D, W if orientation == "coronal" else H)
    a, b = view.pixel_to_widget(10, 2), view.pixel_to_widget(40, 8)
    assert (b.x() - a.x()) / (b.y() - a.y()) == pytest.approx(aspect, rel=0.02)  # physical aspect (widget px are ints)
    with qtbot.waitSignal(view.box_drawn, timeout=3000) as blocker:
        drag(qtbot, view, (10.5, 2.5), (40.5, 8.5))
    z, box = blocker.args
    assert z == index and box.tolist() == [10, 2, 40, 8]
    assert view.last_box_orientation == orientation and view.box_item.isVisible()
    assert window.cursor_label.text().startswith(voxel + "  value")


@pytest.mark.parametrize(
    ("orientation", "direction", "index", "expected_index"),
    [
        # box [10, 2, 40, 8] -> rows 2..8 are z 3..9 when flipped (z = 11 - row), z 2..8 when not
        ("coronal", UP, 17, (slice(3, 10), 17, slice(10, 41))),
        ("sagittal", UP, 50, (slice(3, 10), slice(10, 41), 50)),
        ("coronal", DOWN, 17, (slice(2, 9), 17, slice(10, 41))),
    ],
)
def test_box_on_a_reformatted_view_writes_exactly_its_voxels_undo_redo(
    qtbot, make_window, box_fake, orientation, direction, index, expected_index
) -> None:
    window = make_window(box_fake(scale=SCALES[orientation]))
    open_volume(window, volume(direction), orientation, index)
    s = window.session
    s.add_label("liver")
    drag(qtbot, window.view, (10.5, 2.5), (40.5, 8.5))
    qtbot.waitUntil(lambda: s.labels.any(), timeout=5000)
    expected = np.zeros((D, H, W), np.uint8)
    expected[expected_index] = 1
    np.testing.assert_array_equal(s.labels, expected)
    assert len(s.history) == 2  # 'add label' + the segmentation
    window.undo()
    assert not s.labels.any()
    window.redo()
    np.testing.assert_array_equal(s.labels, expected)


@pytest.mark.parametrize(
    ("orientation", "index", "box", "spacing", "bright", "expected_index"),
    [
        # coronal y 30: 12 rows of 2.5 mm x 64 columns of 0.7 mm (30 x 44.8 mm) -> 171 x 256 model px; the
        # cuboid's plane rows 3..8 (z 8..3, flipped) -> model rows [3, 9) * 171 / 12 = [42.75, 128.25), its
        # columns x 10..30 -> [40, 124): 85 x 84 model px for 15 mm x 14.7 mm (raw voxels would give 24 x 84)
        ("coronal", 30, [5.0, 1.0, 40.0, 10.0], (0.7, 2.5), ((43, 127), (40, 123)), (slice(3, 9), 30, slice(10, 31))),
        # sagittal x 20: 12 rows of 2.5 mm x 64 columns of 1.3 mm (30 x 83.2 mm) -> 92 x 256 model px; rows
        # [3, 9) * 92 / 12 = [23, 69), columns y 20..40 -> [80, 164): 46 x 84 px for 15 mm x 27.3 mm
        ("sagittal", 20, [15.0, 1.0, 45.0, 10.0], (1.3, 2.5), ((23, 68), (80, 163)), (slice(3, 9), slice(20, 41), 20)),
    ],
)
def test_reformatted_slice_reaches_the_model_with_its_physical_aspect(
    qtbot, make_window, box_fake, orientation, index, box, spacing, bright, expected_index
) -> None:
    backend = box_fake(objects=True, scale=SCALES[orientation])
    window = make_window(backend)
    vol = volume(cuboid=True)
    open_volume(window, vol, orientation, index)
    s = window.session
    s.add_label("cuboid")
    window.view.box_drawn.emit(index, np.array(box))
    qtbot.waitUntil(lambda: s.labels.any(), timeout=5000)
    # what the model was given for this slice: the displayed slice, windowed, at its physical aspect
    plane = Plane.of(vol, orientation)
    assert plane.pixel_spacing(SPACING) == spacing
    shown = ModelInput(vol).reformatted(plane)[index]
    x = backend.inputs[-1]
    np.testing.assert_array_equal(x, preprocess(shown, spacing)[0])
    inside = x[0] > 0.5
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    assert ((rows[0], rows[-1]), (cols[0], cols[-1])) == bright
    height_mm, width_mm = 6 * 2.5, 21 * spacing[0]  # the cuboid's extent in this plane
    assert (rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1) == pytest.approx(height_mm / width_mm, rel=0.03)
    # the mask comes back in plane pixels and lands on exactly the cuboid's voxels of this plane
    expected = np.zeros((D, H, W), np.uint8)
    expected[expected_index] = 1
    np.testing.assert_array_equal(s.labels, expected)


def test_box_on_coronal_honours_the_overlap_rule(qtbot, make_window, box_fake) -> None:
    window = make_window(box_fake(scale=SCALES["coronal"]))
    open_volume(window, volume(), "coronal", 17)
    s = window.session
    s.add_label("kept")
    other = np.zeros((H, W), bool)
    other[10:30, 20:25] = True
    s.apply_mask(5, other)  # label 1 on z 5, y 10..29, x 20..24 (crosses the coronal slice y 17)
    s.add_label("new")
    window.apply_settings(window.settings.__class__(window.settings.model, 0, 64, "background"))
    assert s.overlap is OverlapRule.BACKGROUND
    window.view.box_drawn.emit(17, np.array([10.0, 2.0, 40.0, 8.0]))
    qtbot.waitUntil(lambda: (s.labels == 2).any(), timeout=5000)
    expected = np.zeros((D, H, W), np.uint8)
    expected[5][other] = 1
    expected[3:10, 17, 10:41] = 2
    expected[5, 17, 20:25] = 1  # protected
    np.testing.assert_array_equal(s.labels, expected)


@pytest.mark.parametrize("orientation", ["coronal", "sagittal"])
def test_propagation_from_a_reformatted_box_walks_its_axis_one_undo_step(
    qtbot, make_window, box_fake, orientation
) -> None:
    backend = box_fake(objects=True, scale=SCALES[orientation])
    window = make_window(backend)
    vol = volume(cuboid=True)
    # cuboid z 3..8 -> plane rows 3..8 (flipped: 11 - z); columns x 10..30 (coronal) or y 20..40 (sagittal)
    index, box = (30, [8.0, 2.0, 32.0, 9.0]) if orientation == "coronal" else (20, [18.0, 2.0, 42.0, 9.0])
    open_volume(window, vol, orientation, index)
    window.view.last_box = (index, np.array(box))
    s = window.session
    s.add_label("cuboid")
    steps = len(s.history)
    previews: list[tuple[str, int]] = []
    window.worker.slice_done.connect(lambda _r, i, _m: previews.append((window.view.preview_orientation, i)))
    window.propagate(below=5, above=20)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=20000) as blocker:
        pass
    assert blocker.args[3] is False and blocker.args[1] == index - 5  # the stack starts 5 slices below
    expected = np.zeros((D, H, W), np.uint8)
    if orientation == "coronal":  # y 25..50 visited; the cuboid spans y 20..40
        expected[3:9, 25:41, 10:31] = 1
    else:  # x 15..40 visited; the cuboid spans x 10..30
        expected[3:9, 20:41, 15:31] = 1
    np.testing.assert_array_equal(s.labels, expected)
    assert len(s.history) == steps + 1
    assert sorted(i for _, i in previews) == list(range(index - 5, index + 21))
    assert {o for o, _ in previews} == {orientation}
    window.undo()
    assert not s.labels.any()


def test_axial_and_coronal_slices_with_the_same_index_never_share_an_embedding(qtbot, box_fake) -> None:
    backend = box_fake()
    worker = SegmentationWorker(lambda: backend, prefetch=0)
    try:
        arr = np.random.default_rng(3).integers(0, 255, size=(8, 16, 24)).astype(np.uint8)
        worker.set_volume(Volume(arr))  # identity direction: coronal rows are flipped
        for orientation in ("axial", "coronal", "axial", "coronal", "sagittal"):
            with qtbot.waitSignal(worker.encoded, timeout=5000):
                worker.encode(2, orientation)
        assert backend.encodes == 3 and len(worker.cache) == 3  # the repeats were cache hits
        np.testing.assert_array_equal(backend.inputs[0], preprocess(arr[2])[0])
        np.testing.assert_array_equal(backend.inputs[1], preprocess(arr[::-1, 2, :])[0])
        np.testing.assert_array_equal(backend.inputs[2], preprocess(arr[::-1, :, 2])[0])
        orientations = sorted(k[1][0][2] for k in worker.cache._data)
        assert orientations == ["axial", "coronal", "sagittal"] and {k[1][1] for k in worker.cache._data} == {2}
        # a coronal box is decoded on the coronal embedding, in the coronal plane frame
        with qtbot.waitSignal(worker.mask_ready, timeout=5000) as blocker:
            worker.segment(2, np.array([4.0, 1.0, 12.0, 5.0]), "coronal")
        assert blocker.args[2].shape == (8, 24) and backend.encodes == 3
    finally:
        assert worker.shutdown()


def test_prefetch_follows_the_shown_orientation(qtbot, fake) -> None:
    backend = fake()
    worker = SegmentationWorker(lambda: backend, prefetch=1)
    try:
        worker.set_volume(Volume(np.zeros((6, 5, 7), np.uint8)))
        with qtbot.waitSignal(worker.encoded, timeout=5000):
            worker.encode(0, "sagittal")
        qtbot.waitUntil(lambda: len(worker.cache) == 2, timeout=5000)  # sagittal 0, then sagittal 1
        drain_worker(qtbot, worker)  # the prefetch that filled the cache and any step it queued have ended
        assert sorted((k[1][0][2], k[1][1]) for k in worker.cache._data) == [("sagittal", 0), ("sagittal", 1)]
    finally:
        assert worker.shutdown()


def test_result_for_an_orientation_no_longer_shown_is_dropped(qtbot, fake, make_window) -> None:
    window = make_window(fake(delay=0.3))
    open_volume(window, volume(), "coronal", 17)
    window.view.box_drawn.emit(17, np.array([10.0, 2.0, 40.0, 8.0]))
    window.set_orientation("axial")
    window.view.step(1)  # scrolling the axial view: its encode is a newer request, the coronal result is stale
    with qtbot.waitSignal(window.worker.encoded, timeout=5000):
        pass
    drain_worker(qtbot, window.worker)  # the box's request has ended and its result (if any) was handled
    assert not window.session.labels.any()


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_reformatted_model_input_uses_the_same_intensity_mapping(modality) -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(100, 300, size=(5, 16, 12)).astype(np.int16)
    vol = Volume(arr, modality=modality)
    axial = ModelInput(vol)
    coronal = axial.reformatted(Plane("coronal", flip=True))
    expected = to_display_uint8(arr, modality)  # one mapping for the whole volume
    assert len(coronal) == 16 and coronal.shape == (16, 5, 12)
    for y in (0, 7, 15):
        np.testing.assert_array_equal(coronal[y], expected[::-1, y, :])
    assert coronal.mapping == axial.mapping
