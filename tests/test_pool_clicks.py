"""The held-out pool click proxy (``training/pool_clicks.py``): which images it takes, the boxes it gives each
object (the challenge's tight bbox, or the click trainer's perturbation), and its per-size rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.core.evaluation.click_protocol import ClickCurve

pool_clicks = pytest.importorskip("training.pool_clicks")


def test_only_held_out_labelled_groups_are_taken_once_each(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "id,shard,row,group,modality,source,split,h,w,rank\n"
        "a,0,0,pool/m/a.png,microscopy,s,val,1,1,0\n"
        "b,0,1,pool/m/b.png,microscopy,s,train,1,1,0\n"
        "c,0,2,pool/e/c.jpg,endoscopy,s,proxy,1,1,0\n"
        "c2,0,3,pool/e/c.jpg,endoscopy,s,proxy,1,1,0\n"
        "d,0,4,pool/e/d.jpg,endoscopy,s,proxy,1,1,0\n"
    )
    labelled = {g: Path(g) for g in ("pool/m/a.png", "pool/m/b.png", "pool/e/c.jpg")}  # d has no labels
    assert pool_clicks.held_out_images(manifest, labelled) == [
        ("pool/m/a.png", "microscopy"),
        ("pool/e/c.jpg", "endoscopy"),
    ]


def test_first_per_modality_keeps_the_order() -> None:
    images = [("a", "m"), ("b", "e"), ("c", "m"), ("d", "m"), ("e", "e")]
    assert pool_clicks.first_per_modality(images, 2) == [("a", "m"), ("b", "e"), ("c", "m"), ("e", "e")]


def _labels() -> np.ndarray:
    labels = np.zeros((100, 200), np.uint8)
    labels[10:20, 30:45] = 7
    labels[60:99, 150:200] = 3  # touches the bottom and right edges
    return labels


def test_tight_boxes_are_the_inclusive_bboxes_in_label_order() -> None:
    gts, boxes = pool_clicks.object_boxes(_labels(), "tight", np.random.default_rng(0))
    np.testing.assert_array_equal(boxes, [[150, 60, 199, 98], [30, 10, 44, 19]])  # label 3 first, then 7
    assert set(np.unique(gts)) == {0, 1, 2} and (gts == 2).sum() == 150


def test_perturbed_boxes_grow_within_the_trainer_s_range_and_stay_in_the_image() -> None:
    _, tight = pool_clicks.object_boxes(_labels(), "tight", np.random.default_rng(0))
    grown = []
    for seed in range(20):
        _, boxes = pool_clicks.object_boxes(_labels(), "perturbed", np.random.default_rng(seed))
        assert (boxes[:, :2] <= tight[:, :2]).all() and (boxes[:, 2:] >= tight[:, 2:]).all()
        assert boxes.min() >= 0 and (boxes[:, [0, 2]] <= 199).all() and (boxes[:, [1, 3]] <= 99).all()
        grown.append(boxes[1] - tight[1])
    # the small object: at most max(5, 10 % of 15 * 1.28) = 5 model px = 3.9 image px per side, and some growth
    assert np.abs(grown).max() <= 4 and np.abs(grown).max() >= 2


def test_size_rows_put_each_object_in_its_band() -> None:
    curve = ClickCurve(dsc=[0.5, 0.7], nsd=[0.5, 0.7], objects=(1, 2), object_dsc=[(0.4, 0.6), (0.6, 0.8)],
                       object_nsd=[(0.4, 0.6), (0.6, 0.8)])  # fmt: skip
    table = pool_clicks.size_table([curve], [[50, 5000]], clicks=1)
    assert "mean over sizes" in table and "modalities" not in table
    lines = [x for x in table.splitlines() if "px" in x]
    assert [x.split("|")[1].strip() for x in lines] == ["0-100 px", "1000+ px"]
    assert lines[0].split("|")[3].strip() == "0.4000" and lines[1].split("|")[4].strip() == "0.8000"


def test_size_band_uses_the_pool_size_bands() -> None:
    assert [pool_clicks.size_band(a) for a in (20, 99, 100, 999, 1000)] == [
        "0-100 px", "0-100 px", "100-300 px", "300-1000 px", "1000+ px",
    ]  # fmt: skip
