"""The app's segment-and-save path without a window (the bundle's hidden ``--segment-and-export``, which
``scripts/check_bundle.py`` compares with ``medsam-segment``): read, map as the app does, segment one slice, save
the labels as the app saves them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def segment_and_export(image: Path, box: Sequence[float], z: int, output: Path) -> int:
    """The app's path without a window: read, map as the app does, segment slice ``z``, save labels.

    Returns the number of labelled voxels. Output: NIfTI (+ the app's ``.json`` label sidecar).
    """
    from ..core.backends import load_backend
    from ..core.document import files
    from ..core.document.annotation import AnnotationSession
    from ..core.inference.model_input import ModelInput
    from ..core.inference.predictor import Predictor
    from ..core.inference.propagation import segment_slice
    from ..io import read_image
    from ..model_files import default_model_name

    volume = read_image(image)
    if not 0 <= z < volume.n_slices:
        raise ValueError(f"slice {z} is outside the image (slices 0..{volume.n_slices - 1})")
    predictor = Predictor(load_backend(default_model_name()))
    mask = segment_slice(predictor, ModelInput(volume)[z], np.asarray([box], dtype=np.float64)) > 0
    session = AnnotationSession(volume)
    session.ensure_active_label()
    session.apply_mask(z, mask)
    files.save_labels(session, output)
    return int((session.labels > 0).sum())
