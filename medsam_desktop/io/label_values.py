"""The label-map storage rule, in one place: labels are whole numbers 0..65535, stored as uint8 while every
label fits in 0..255, else uint16 (NIfTI masks, challenge ``segs``, the app's label map, propagation)."""

from __future__ import annotations

import numpy as np

MAX_LABEL = int(np.iinfo(np.uint16).max)


def label_dtype(max_value: int) -> np.dtype:
    """uint8 for a largest label of at most 255, uint16 up to :data:`MAX_LABEL`; ValueError beyond or below 0."""
    if not 0 <= max_value <= MAX_LABEL:
        raise ValueError(f"label values must be between 0 and {MAX_LABEL} (found {max_value})")
    return np.dtype(np.uint8 if max_value <= 255 else np.uint16)
