"""Intensity mapping to the model's uint8 range: CT windows, MR/PET percentiles, bounded memory on volumes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from medsam_desktop.core.inference import intensity


def _window_reference(a: np.ndarray, level: float, width: float) -> np.ndarray:
    lo, hi = level - width / 2, level + width / 2
    return np.round((np.clip(a.astype(np.float32), lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)


def test_window_maps_the_window_edges_and_clips() -> None:
    out = intensity.window(np.array([-1000, -160, 40, 240, 3000], dtype=np.int16), 40, 400)
    assert out.tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("chunk", [1_000, 7_919, 1 << 22])
def test_slab_by_slab_mapping_equals_the_whole_array_formula(monkeypatch, chunk: int) -> None:
    monkeypatch.setattr(intensity, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(0)
    ct = rng.integers(-1200, 2000, (17, 60, 50)).astype(np.int16)
    np.testing.assert_array_equal(intensity.window(ct, 40, 400), _window_reference(ct, 40, 400))
    mr = rng.normal(300, 80, (9, 40, 30)).astype(np.float32)
    mr[0, 0, 0], mr[1, 1, 1], mr[2, 2, 2] = np.nan, 0.0, np.inf
    lo, hi = intensity.percentile_range(mr)
    arr = np.nan_to_num(mr, nan=lo, posinf=hi, neginf=lo)
    ref = np.round((np.clip(arr, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    ref[arr == 0] = 0
    np.testing.assert_array_equal(intensity.percentile_normalise(mr), ref)


def test_scalars_and_empty_arrays_keep_their_shape() -> None:
    assert intensity.window(np.float32(40.0), 40, 400).shape == ()
    assert intensity.percentile_normalise(np.zeros((0, 4), np.float32), value_range=(0, 1)).shape == (0, 4)


def test_volume_mapping_needs_no_full_size_float_copy() -> None:
    """A 64 MB int16 volume maps with temporaries far below its float32 copy (128 MB)."""
    vol = np.zeros((128, 512, 512), dtype=np.int16)
    tracemalloc.start()
    try:
        out = intensity.to_display_uint8(vol, "CT")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == vol.shape and out.dtype == np.uint8
    assert peak < out.nbytes + 64 * 2**20, peak / 2**20  # output (32 MB) + slab temporaries, not +128 MB
