"""core.model_input: the model's view of a volume (Qt-free, shared by the app's worker and the benchmarks)."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.inference.intensity import to_display_uint8
from medsam_desktop.core.inference.model_input import ModelInput
from medsam_desktop.io import Volume


@pytest.mark.parametrize("modality", ["CT", "MR", "unknown"])
def test_model_input_matches_the_engine_intensity_mapping(modality) -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(100, 300, size=(5, 16, 16)).astype(np.int16)
    arr[0, :4] = 0
    lazy = ModelInput(Volume(arr, modality=modality))
    expected = to_display_uint8(arr, modality)
    for z in range(5):
        np.testing.assert_array_equal(lazy[z], expected[z])
