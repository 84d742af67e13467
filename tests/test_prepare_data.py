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
    prepare_data.main(["--input", str(src), "--out", str(out), "--val-fraction", "0.3", "--proxy-fraction", "0"])
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


def _groups(modality: str, n_groups: int, per_group: int) -> list[tuple[str, str]]:
    return [(f"{modality}{g}", modality) for g in range(n_groups) for _ in range(per_group)]


def test_proxy_split_takes_whole_groups_per_modality_and_leaves_val_alone() -> None:
    groups = _groups("endoscopy", 200, 1) + _groups("mr", 12, 40) + _groups("pet", 3, 30)
    splits = prepare_data.assign_splits(groups, val_fraction=0.05, proxy_fraction=0.15)
    assert splits == prepare_data.assign_splits(list(reversed(groups)), 0.05, 0.15)  # order-free, deterministic
    for g, _ in groups:  # the validation split is the one every earlier run used
        assert (splits[g] == "val") == (prepare_data.group_hash(g) < 0.05)
    for modality, n_items in (("endoscopy", 200), ("mr", 480)):
        proxy = [g for g, m in groups if m == modality and splits[g] == "proxy"]
        assert 0.15 * n_items <= len(proxy) < 0.15 * n_items + (40 if modality == "mr" else 1)  # whole groups
    assert not any(splits[g] == "proxy" for g, m in groups if m == "pet")  # 3 volumes: all kept for training
    assert set(prepare_data.assign_splits(groups, 0.05, 0.0).values()) <= {"val", "train"}


def test_resplit_rewrites_the_split_only_and_the_pack_leaves_the_proxy_out(tmp_path: Path) -> None:
    from training import pack_shards

    src, out = tmp_path / "src", tmp_path / "out"
    make_source_folder(src)
    prepare_data.main(["--input", str(src), "--out", str(out), "--val-fraction", "0", "--proxy-fraction", "0"])
    before = read_manifest(out)
    assert {it.split for it in before} == {"train"}
    assert prepare_data.main(["--resplit", str(out), "--val-fraction", "0", "--proxy-fraction", "0.5"]) == 0
    after = read_manifest(out)
    assert [(it.id, it.group, it.rank) for it in after] == [(it.id, it.group, it.rank) for it in before]
    proxy = {it.id for it in after if it.split == "proxy"}
    assert proxy, "some modality of the synthetic folder has enough source files for a proxy"
    pack_shards.pack(out, tmp_path / "pack", max_mb=100)
    packed = read_manifest(tmp_path / "pack")
    assert packed and not any(it.split == "proxy" for it in packed)
    assert len(packed) == len(after) - len(proxy)
