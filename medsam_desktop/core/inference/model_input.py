"""The model's view of a volume: slices of one plane mapped lazily to the uint8 range the model expects.

Qt-free, so the app's worker, the self-test and the benchmarks feed the model through the same class.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from ...io import Volume
from .intensity import CT_WINDOWS, percentile_normalise, percentile_range, to_display_uint8, window
from .reformat import Plane


class ModelInput:
    """A volume mapped lazily, slice by slice, to the uint8 display range the model expects.

    CT uses ``ct_window`` (level, width; the displayed window, soft tissue by default), other modalities the
    0.5-99.5 percentile range of the whole volume (computed once), 8-bit data passes through. Quacks like a
    (N, rows, cols[, 3]) array for ``propagate_boxes``: the slices of ``plane`` (axial by default: the
    volume's (D, H, W)), reformatted planes as views of the voxels (no full-resolution resampling here).
    :attr:`pixel_spacing` gives the (column, row) mm of a slice's pixels: the predictor resizes each slice
    straight to its physical aspect in the 256 model frame (square pixels: exactly the challenge's input).
    :attr:`mapping` identifies the mapping for cache keys.
    """

    def __init__(
        self,
        volume: Volume,
        keep: int = 16,
        ct_window: tuple[float, float] = CT_WINDOWS["soft tissue"],
        plane: Plane | None = None,
    ) -> None:
        self.volume = volume
        self.plane = plane or Plane()
        self._stack = self.plane.stack(volume.array)
        self.shape = self._stack.shape
        self._range: tuple[float, float] | None = None
        self._slices: OrderedDict[int, np.ndarray] = OrderedDict()
        self._keep = keep
        self._windowed = volume.modality == "CT" and volume.array.dtype not in (np.uint8, np.bool_)
        self.ct_window = (float(ct_window[0]), float(ct_window[1]))

    def reformatted(self, plane: Plane) -> ModelInput:
        """The same volume and intensity mapping (CT window, percentile range) sliced along ``plane``."""
        out = ModelInput(self.volume, self._keep, self.ct_window, plane)
        out._range = self._range
        return out

    @property
    def mapping(self) -> Hashable:
        """The CT window when it applies (embeddings of other windows must not be reused), else None."""
        return self.ct_window if self._windowed else None

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(column, row) mm of one pixel of a slice in the plane frame (axial: the in-plane (x, y) spacing).

        Passed to the predictor for every view, axial included: the model sees each slice with the physical
        aspect the view shows (square pixels, the usual axial case, change nothing).
        """
        sx, sy, sz = (float(v) for v in self.volume.spacing[:3])
        col_mm, row_mm = self.plane.pixel_spacing((sx, sy, sz))
        return float(col_mm), float(row_mm)

    def set_ct_window(self, level: float, width: float) -> bool:
        """Use another CT window; True when the model input changed (cached slices are dropped)."""
        new = (float(level), max(float(width), 1.0))
        if not self._windowed or new == self.ct_window:
            return False
        self.ct_window = new
        self._slices.clear()
        return True

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, z: int) -> np.ndarray:
        z = int(z)
        hit = self._slices.get(z)
        if hit is not None:
            self._slices.move_to_end(z)
            return hit
        out = self._convert(np.ascontiguousarray(self._stack[z]))
        self._slices[z] = out
        while len(self._slices) > self._keep:
            self._slices.popitem(last=False)
        return out

    def _convert(self, sl: np.ndarray) -> np.ndarray:
        if self._windowed:
            return window(sl, *self.ct_window)
        if sl.dtype == np.uint8 or sl.dtype == np.bool_ or self.volume.modality == "CT":
            return to_display_uint8(sl, self.volume.modality)
        if self._range is None:
            self._range = percentile_range(self.volume.array)
        return percentile_normalise(sl, value_range=self._range)
