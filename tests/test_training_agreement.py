"""training/agreement.py: the teacher-agreement proxy (student masks scored against the teacher's own masks)."""

from __future__ import annotations

import numpy as np
import pytest

from training.agreement import (
    MEAN,
    MIN_MASK_PX,
    Agreement,
    agreement,
    difference_table,
    paired_difference,
    random_boxes,
    table,
    teacher_prompts,
    tight_box,
)
from training.shards import ShardItem


def _box_model(shrink: int = 0):
    """A fake (encode, decode): the mask of a box is the box itself, ``shrink`` pixels smaller on every side."""

    def encode(x: np.ndarray) -> np.ndarray:
        return np.zeros((1, 256, 64, 64), np.float32)

    def decode(emb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = np.full((len(boxes), 256, 256), -1.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int)):
            out[i, y0 + shrink : y1 + 1 - shrink, x0 + shrink : x1 + 1 - shrink] = 1.0
        return out

    return encode, decode


class _Images:
    def get(self, item: ShardItem) -> np.ndarray:
        return np.full((256, 256, 3), 100, np.uint8)


def _items() -> list[ShardItem]:
    return [ShardItem(f"i{k}", 0, k, f"g{k}", mod, "s", "val", 200, 240, k) for k, mod in enumerate(["ct", "mr", "ct"])]


def test_a_student_that_is_the_teacher_agrees_fully_and_a_worse_one_less() -> None:
    same, worse = agreement(_items(), _Images(), _box_model(), [_box_model(), _box_model(shrink=3)], boxes=2)
    assert same.dsc == {"ct": 1.0, "mr": 1.0} and same.nsd == {"ct": 1.0, "mr": 1.0}
    assert same.prompts == {"ct": 4, "mr": 2}  # every seed box gave a prompt
    assert 0.5 < worse.mean_dsc < 1.0 and worse.mean_nsd < same.mean_nsd
    text = table(["same", "worse"], [same, worse])
    assert "| ct | 4 |" in text and "mean over modalities" in text


def test_prompts_come_from_the_teachers_masks_inside_the_content() -> None:
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 100, 150, 50)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 100).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    mask = np.zeros((50, 60), bool)
    assert tight_box(mask) is None  # nothing to prompt
    mask[10:20, 5:30] = True
    np.testing.assert_array_equal(tight_box(mask), [5, 10, 29, 19])


def test_teacher_prompts_are_the_tight_boxes_of_the_teachers_masks_of_the_seed_boxes() -> None:
    seeds = random_boxes(np.random.default_rng(3), 120, 200, 6)

    def decode(boxes: np.ndarray) -> np.ndarray:  # each seed box's mask: a 3 px shrunk box, the 2nd one tiny
        np.testing.assert_array_equal(boxes, seeds)  # the same random stream as random_boxes
        out = np.full((len(boxes), 256, 256), -1.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int)):
            out[i, y0 + 3 : y1 - 2, x0 + 3 : x1 - 2] = 1.0
        out[1] = -1.0
        out[1, 10:13, 10:13] = 1.0  # 9 px < MIN_MASK_PX: no prompt
        out[:, 130:, :] = 1.0  # outside the 120-row content: never part of a prompt
        return out

    prompts = teacher_prompts(decode, 120, 200, 6, np.random.default_rng(3))
    assert prompts.dtype == np.float32 and prompts.shape == (5, 4) and MIN_MASK_PX > 9
    expected = np.asarray(np.delete(seeds, 1, axis=0), int) + np.array([3, 3, -3, -3])
    np.testing.assert_array_equal(prompts, expected)
    empty = teacher_prompts(lambda b: np.full((len(b), 256, 256), -1.0), 120, 200, 4, np.random.default_rng(0))
    assert empty.shape == (0, 4)


def test_held_out_is_val_and_proxy_by_rank_without_what_an_older_run_saw(tmp_path) -> None:
    from training.agreement import held_out
    from training.prepare_data import write_manifest

    splits = ["train", "val", "proxy", "train", "proxy", "val", "proxy", "train"]
    rows = [
        {"id": f"i{r}", "shard": 0, "row": r, "group": f"g{r}", "modality": "mr", "source": "s", "split": split,
         "h": 256, "w": 256, "rank": r}
        for r, split in enumerate(splits)
    ]  # fmt: skip
    write_manifest(tmp_path, rows)
    assert [it.id for it in held_out(tmp_path)] == ["i1", "i2", "i4", "i5", "i6"]
    assert [it.id for it in held_out(tmp_path, split="proxy")] == ["i2", "i4", "i6"]
    assert [it.id for it in held_out(tmp_path, n=2, split="val")] == ["i1", "i5"]
    # the first 3 non-validation items by rank (i0, i2, i3) were a cache of 3 training items before the proxy
    assert [it.id for it in held_out(tmp_path, unseen_first=3)] == ["i1", "i4", "i5", "i6"]


def test_a_prompt_whose_teacher_mask_is_empty_is_left_out_for_every_student() -> None:
    """Both masks empty made the modality's mean NaN (one CT prompt of 1,623 did); the choice is the teacher's."""
    encode, box_decode = _box_model()
    calls = []

    def teacher_decode(emb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        calls.append(len(boxes))
        out = box_decode(emb, boxes)
        if len(calls) % 2 == 0:  # the reference decode of each slice: the first prompt comes back empty
            out[0] = -1.0
        return out

    (result,) = agreement(_items(), _Images(), (encode, teacher_decode), [_box_model()], boxes=2)
    assert result.prompts == {"ct": 2, "mr": 1}  # one of each slice's two prompts left out
    assert result.dsc == {"ct": 1.0, "mr": 1.0} and not np.isnan(result.mean_nsd)


def test_paired_difference_is_the_tables_difference_with_an_interval_over_slices() -> None:
    items = _items()
    same, worse = agreement(items, _Images(), _box_model(), [_box_model(), _box_model(shrink=3)], boxes=2)
    modality_of = {it.id: it.modality for it in items}
    diff = paired_difference(same, worse, modality_of)
    for m in ("ct", "mr"):
        mean, lo, hi = diff.dsc[m]
        assert mean == pytest.approx(worse.dsc[m] - same.dsc[m]) and lo <= mean <= hi < 0
    assert diff.dsc[MEAN][0] == pytest.approx(worse.mean_dsc - same.mean_dsc)
    assert diff.nsd[MEAN][0] == pytest.approx(worse.mean_nsd - same.mean_nsd)
    assert paired_difference(same, same, modality_of).dsc[MEAN] == (0.0, 0.0, 0.0)
    text = difference_table("same", ["worse"], [diff])
    assert diff.slices == {"ct": 2, "mr": 1, MEAN: 3}
    assert text.splitlines()[-1].startswith(f"| {MEAN} | 3 | -") and "| ct | 2 | -" in text
    other_slices = paired_difference(Agreement({}, {}, {}, {"i0": same.per_item["i0"]}), worse, modality_of)
    with pytest.raises(ValueError, match="different slices"):
        difference_table("same", ["worse", "other"], [diff, other_slices])


def test_the_interval_widens_with_disagreeing_slices_and_skips_unmatched_ones() -> None:
    base = Agreement({}, {}, {}, {f"s{k}": [(1.0, 1.0)] * 3 for k in range(20)})
    spread = {f"s{k}": [(1.0 - 0.02 * k, 1.0)] * 3 for k in range(20)}  # slice k loses 2k points of DSC
    other = Agreement({}, {}, {}, {**spread, "s0": [(0.5, 0.5)]})  # s0 scored on another prompt count: left out
    diff = paired_difference(base, other, {f"s{k}": "ct" for k in range(20)})
    mean, lo, hi = diff.dsc["ct"]
    assert mean == pytest.approx(-np.mean([0.02 * k for k in range(1, 20)]))
    assert lo < mean < hi and hi - lo > 0.05 and diff.nsd["ct"] == (0.0, 0.0, 0.0)
