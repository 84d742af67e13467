"""The worker's domain logic without Qt: cache keys per stack, the prefetch plan, the stale-request rule, the
propagation range, model loading that fails once and says so."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import BoxBackend

from medsam_desktop.core.inference.cache import EmbeddingCache
from medsam_desktop.core.inference.segmentation_service import (
    ModelUnavailableError,
    RequestClock,
    SegmentationService,
    belongs_to_volume,
    clamp_range,
    prefetch_plan,
)
from medsam_desktop.io import Volume


def _volume(depth: int = 6) -> Volume:
    arr = np.zeros((depth, 40, 50), np.int16)
    arr[:, 10:30, 15:35] = 200
    return Volume(arr, spacing=(1.0, 1.0, 2.0), modality="CT")


def _service(backend: BoxBackend | None = None, radius: int = 2) -> tuple[SegmentationService, BoxBackend]:
    backend = backend or BoxBackend()
    service = SegmentationService(lambda: backend, EmbeddingCache(), prefetch_radius=radius)
    service.set_volume(("vol", 1), _volume())
    return service, backend


def test_prefetch_plan_is_nearest_first_inside_the_stack() -> None:
    assert prefetch_plan(10, 5, 2) == [6, 4, 7, 3]
    assert prefetch_plan(10, 0, 2) == [1, 2]
    assert prefetch_plan(3, 2, 3) == [1, 0]
    assert prefetch_plan(10, 5, 0) == []


def test_propagation_range_is_clamped_to_the_stack() -> None:
    assert clamp_range(20, 0, 15, 15) == (0, 15)
    assert clamp_range(20, 19, 15, 15) == (15, 0)
    assert clamp_range(5, 2, 100, 100) == (2, 2)


def test_only_the_newest_request_is_current_and_older_ones_are_stale() -> None:
    clock = RequestClock(latest=7)
    assert clock.is_current(7) and not clock.is_stale(7)
    assert clock.is_stale(6) and not clock.is_current(6)
    clock.add_pending(2)
    clock.add_pending(-1)
    assert clock.pending == 1


def test_cache_keys_are_per_volume_mapping_and_orientation() -> None:
    service, _ = _service()
    predictor, loaded = service.load_model()
    assert loaded and service.load_model() == (predictor, False)
    cache = predictor.cache
    service.encode(predictor, "axial", 2)
    service.encode(predictor, "coronal", 2)
    assert len(cache) == 2  # axial slice 2 and coronal slice 2 never share an embedding
    assert service.stack_key("axial") != service.stack_key("coronal")
    assert service.stack_key("axial")[0] == ("vol", 1)
    cache.discard(lambda k: not belongs_to_volume(k, ("vol", 2)))  # what a new image keeps: nothing of this one
    assert len(cache) == 0
    service.encode(predictor, "axial", 2)
    cache.discard(lambda k: not belongs_to_volume(k, ("vol", 1)))
    assert len(cache) == 1
    assert not belongs_to_volume("other", ("vol", 1))
    before = service.stack_key("axial")
    assert service.set_ct_window(300, 1500) and service.stack_key("axial") != before  # a new mapping, new keys


def test_prefetch_encodes_the_plan_once_and_skips_cached_slices() -> None:
    service, backend = _service(radius=1)
    predictor, _ = service.load_model()
    service.encode(predictor, "axial", 3)
    assert backend.encodes == 1
    assert service.plan_prefetch("axial", 3)
    while service.prefetch_one():
        pass
    assert backend.encodes == 3  # slices 4 and 2
    assert service.plan_prefetch("axial", 3)
    while service.prefetch_one():
        pass
    assert backend.encodes == 3  # all cached now


def test_a_failing_model_is_tried_once_and_said_every_time() -> None:
    calls = []

    def broken() -> BoxBackend:
        calls.append(1)
        raise OSError("weights file is corrupt")

    service = SegmentationService(broken, EmbeddingCache())
    with pytest.raises(ModelUnavailableError, match="corrupt") as first:
        service.load_model()
    assert first.value.__cause__ is not None  # the failure itself
    with pytest.raises(ModelUnavailableError, match="corrupt") as again:
        service.load_model()
    assert again.value.__cause__ is None and calls == [1]  # remembered, not retried
    service.set_factory(BoxBackend)
    assert service.load_model()[1]  # a new factory is tried


def test_propagation_returns_the_clamped_range_and_stops_on_cancel() -> None:
    service, _ = _service()
    predictor, _ = service.load_model()
    seen: list[tuple[int, int, int]] = []
    result = service.propagate(predictor, "axial", 1, np.array([15.0, 10.0, 34.0, 29.0]), 5, 2, threading.Event(),
                               lambda z, m, done, total: seen.append((z, done, total)))  # fmt: skip
    assert result.z0 == 0 and result.masks.shape == (4, 40, 50) and not result.cancelled  # slices 0..3
    assert sorted(z for z, _, _ in seen) == [0, 1, 2, 3] and seen[-1][1:] == (4, 4)
    assert result.masks.any(axis=(1, 2)).all()
    cancel = threading.Event()

    def stop_after_first(z: int, mask: np.ndarray, done: int, total: int) -> None:
        cancel.set()

    result = service.propagate(predictor, "axial", 2, np.array([15.0, 10.0, 34.0, 29.0]), 2, 2, cancel,
                               stop_after_first)  # fmt: skip
    assert result.cancelled and result.masks[2 - result.z0].any()  # the start slice is kept


def test_clicks_reuse_the_chain_and_leave_the_box_result_as_it_was() -> None:
    from fakes import SquareClickBackend

    from medsam_desktop.core.inference.clicks import ClickPoint

    clicks = SquareClickBackend()
    loads = []
    backend = BoxBackend()
    service = SegmentationService(lambda: backend, EmbeddingCache(), 0, click_factory=lambda: loads.append(1) or clicks)
    service.set_volume(("vol", 1), _volume())
    predictor, _ = service.load_model()
    box = np.array([15.0, 10.0, 34.0, 29.0])
    before = service.segment(predictor, "axial", 2, box)
    assert not loads  # no click yet: the click path is not loaded
    p1, p2 = ClickPoint(40, 20, True), ClickPoint(20, 15, False)
    one = service.refine(predictor, "axial", 2, box, [p1])
    two = service.refine(predictor, "axial", 2, box, [p1, p2])
    assert clicks.calls == 2 and loads == [1]
    assert one[20, 40] and not before[20, 40] and not two[15, 20]
    assert np.array_equal(service.refine(predictor, "axial", 2, box, [p1]), one)  # an undone click: no decode
    assert np.array_equal(service.refine(predictor, "axial", 2, box, []), before)
    assert clicks.calls == 2
    assert np.array_equal(service.segment(predictor, "axial", 2, box), before)  # box-only path untouched


def test_a_refining_click_path_gets_the_slice_image_once_and_shows_its_redrawn_mask() -> None:
    from fakes import SquareClickBackend

    from medsam_desktop.core.inference.clicks import ClickPoint, model_image

    clicks = SquareClickBackend(needs_image=True)
    service = SegmentationService(lambda: BoxBackend(), EmbeddingCache(), 0, click_factory=lambda: clicks)
    vol = _volume()
    service.set_volume(("vol", 1), vol)
    predictor, _ = service.load_model()
    box = np.array([15.0, 10.0, 34.0, 29.0])
    p1, p2 = ClickPoint(40, 20, True), ClickPoint(25, 12, True)
    one = service.refine(predictor, "axial", 2, box, [p1])
    two = service.refine(predictor, "axial", 2, box, [p1, p2])
    assert clicks.calls == 2 and len(clicks.images) == 2 and clicks.images[0] is clicks.images[1]  # made once
    service.refine(predictor, "axial", 2, box + 1, [p1])  # another box on the same slice: the same image again
    assert clicks.images[2] is clicks.images[0]
    stack = service._input_for("axial")
    assert np.array_equal(clicks.images[0], model_image(stack[2], stack.pixel_spacing))
    raw_one, _, shown_one = clicks.outputs[0]
    assert not np.array_equal(raw_one, shown_one)
    assert np.array_equal(clicks.prompts[1], raw_one)  # the second click's mask prompt: the decoder's own logits
    plain = SquareClickBackend()
    unrefined = SegmentationService(lambda: BoxBackend(), EmbeddingCache(), 0, click_factory=lambda: plain)
    unrefined.set_volume(("vol", 1), vol)
    plain_two = unrefined.refine(unrefined.load_model()[0], "axial", 2, box, [p1, p2])
    # shown: the redrawn mask (the fake shows 10 model pixels less than its logits), of the same chain of logits
    assert two.sum() < plain_two.sum() and not (two & ~plain_two).any() and one.any()


def test_clicks_without_a_click_path_say_so() -> None:
    from medsam_desktop.core.backends.clicks import ClicksUnavailable
    from medsam_desktop.core.inference.clicks import ClickPoint

    service, _ = _service()
    predictor, _ = service.load_model()
    with pytest.raises(ClicksUnavailable, match="not available"):
        service.refine(predictor, "axial", 0, np.array([1.0, 1, 10, 10]), [ClickPoint(3, 3, True)])
