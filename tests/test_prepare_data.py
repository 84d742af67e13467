"""training/prepare_data.py: shards, manifest, split by source file, balanced ranking, eval refusal."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from synthetic_pool import make_source_folder

from training import prepare_data
from training.shards import ShardImages, read_manifest


def test_prepare_folder(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_source_folder(src)
    assert prepare_data.main(["--input", str(src), "--out", str(out), "--val-fraction", "0.3"]) == 0
    items = read_manifest(out)
    groups = {it.group for it in items}
    assert not any("secret" in g for g in groups)  # eval data never used
    ct = [it for it in items if it.group == "ct.nii.gz"]
    assert len(ct) == 11  # 12 slices, the constant one dropped
    assert len({it.split for it in ct}) == 1  # all slices of a volume on one side
    img = ShardImages(out).get(items[0])
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    png = next(it for it in items if it.group.endswith(".png"))
    assert (png.h, png.w) == (192, 256)
    assert sorted(it.rank for it in items) == list(range(len(items)))
    with open(out / "manifest.csv") as fh:
        assert set(csv.DictReader(fh).fieldnames) >= {"id", "group", "modality", "split", "rank"}


def test_balanced_ranks_interleave_modalities() -> None:
    items = [prepare_data.Item(np.zeros(1), f"g{i}", "endoscopy", "a", 1, 1) for i in range(50)]
    items += [prepare_data.Item(np.zeros(1), f"h{i}", "ct", "b", 1, 1) for i in range(5)]
    ranks = prepare_data.balanced_ranks(items, seed=0)
    first10 = [items[i].modality for i in sorted(range(len(items)), key=lambda i: ranks[i])[:10]]
    assert first10.count("ct") == 5  # the rare modality is not buried at the end


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    """The default (WebP lossless) pack returns every slice bit for bit; JPEG only approximately."""
    from training import pack_shards

    src, out = tmp_path / "src", tmp_path / "out"
    make_source_folder(src)
    prepare_data.main(["--input", str(src), "--out", str(out), "--val-fraction", "0.3"])
    before = read_manifest(out)
    by_group = {(it.group, it.rank): it for it in before}
    a_img = ShardImages(out)
    for codec, max_diff in (("webp", 0), ("jpeg", 60)):
        packed, back = tmp_path / f"pack_{codec}", tmp_path / f"back_{codec}"
        assert pack_shards.main(["pack", "--data", str(out), "--out", str(packed), "--codec", codec]) == 0
        assert pack_shards.main(["unpack", "--pack", str(packed), "--out", str(back)]) == 0
        after = read_manifest(back)
        assert len(after) == len(before)
        b_img = ShardImages(back)
        diffs = []
        for it in after:
            orig = by_group[(it.group, it.rank)]
            diffs.append(np.abs(a_img.get(orig).astype(int) - b_img.get(it).astype(int)))
            assert not b_img.get(it)[it.h :].any() and not b_img.get(it)[:, it.w :].any()  # padding stays zero
        assert max(int(d.max()) for d in diffs) <= max_diff
        if codec == "jpeg":
            assert 0 < np.mean([d.mean() for d in diffs]) < 3.0  # lossy, but close


def test_pack_respects_the_size_limit(tmp_path: Path) -> None:
    from training import pack_shards

    src, out = tmp_path / "src", tmp_path / "out"
    make_source_folder(src)
    prepare_data.main(["--input", str(src), "--out", str(out), "--val-fraction", "0.3"])
    n_all = len(read_manifest(out))
    n = pack_shards.pack(out, tmp_path / "pack", max_mb=0.05)
    assert 0 < n < n_all  # noise images are ~20 KB each losslessly
    assert (tmp_path / "pack" / "images.bin").stat().st_size <= 0.05 * 2**20
    kept = read_manifest(tmp_path / "pack")
    assert kept[0].split == "val"  # validation items are packed first
