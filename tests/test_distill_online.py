"""training/distill_online.py: GPU-side augmentation, lr schedule, bundle -> train -> assemble (on CPU)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_desktop.model import build_model, load_checkpoint, save_checkpoint
from training import distill_online as online
from training import gpu_augment, online_bundle, trainer
from training.shards import apply_variant

pytestmark = pytest.mark.usefixtures("cache_dir")


def _shard_images(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed-looking slices: content [0:h, 0:w] spanning 0..255, zero padding."""
    rng = np.random.default_rng(seed)
    sizes = np.array([[256, 256], [180, 256], [256, 120], [97, 256]])[:n]
    imgs = np.zeros((n, 256, 256, 3), np.uint8)
    for i, (h, w) in enumerate(sizes):
        content = rng.integers(0, 256, (h, w, 1), dtype=np.uint8).repeat(3, axis=2)
        content[0, 0], content[-1, -1] = 0, 255
        imgs[i, :h, :w] = content
    return imgs, sizes


def _gen(seed: int = 0) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _augment(imgs: np.ndarray, hw: np.ndarray, cfg: gpu_augment.AugmentConfig, seed: int = 0) -> np.ndarray:
    x = gpu_augment.augment(torch.from_numpy(imgs), torch.from_numpy(hw), cfg, _gen(seed))
    return x.permute(0, 2, 3, 1).numpy()


def test_no_augment_is_the_plain_model_input() -> None:
    imgs, hw = _shard_images()
    out = _augment(imgs, hw, gpu_augment.NO_AUGMENT)
    np.testing.assert_array_equal(out, imgs.astype(np.float32) / 255.0)


@pytest.mark.parametrize("variant", ["hflip", "vflip"])
def test_flips_mirror_the_content_region_like_the_teacher_cache(variant: str) -> None:
    imgs, hw = _shard_images()
    cfg = gpu_augment.AugmentConfig(
        p_hflip=float(variant == "hflip"), p_vflip=float(variant == "vflip"), p_zoom=0.0, p_gamma=0.0
    )
    out = _augment(imgs, hw, cfg)
    for i, (h, w) in enumerate(hw):
        expected = apply_variant(imgs[i], int(h), int(w), variant).astype(np.float32) / 255.0
        np.testing.assert_array_equal(out[i], expected)


def test_zoom_fills_the_content_region_renormalised_and_quantised() -> None:
    imgs, hw = _shard_images()
    cfg = gpu_augment.AugmentConfig(p_hflip=0.0, p_vflip=0.0, p_zoom=1.0, zoom=(0.5, 0.5), p_gamma=0.0)
    out = _augment(imgs, hw, cfg)
    for i, (h, w) in enumerate(hw):
        content = out[i, :h, :w]
        assert content.min() == 0.0 and content.max() == 1.0  # min-max renormalised like a fresh image
        assert not out[i, h:].any() and not out[i, :, w:].any()  # padding stays zero
        np.testing.assert_allclose(content * 255, np.round(content * 255), atol=1e-4)  # uint8 levels
    # a half-size window of a smooth ramp is a ramp over half the range, stretched back to [0, 1]
    ramp = np.zeros((1, 256, 256, 3), np.uint8)
    ramp[0] = np.linspace(0, 255, 256).round().astype(np.uint8)[None, :, None]
    r = _augment(ramp, np.array([[256, 256]]), cfg)[0, 128, :, 0]
    assert np.all(np.diff(r) >= 0) and r[0] == 0 and r[-1] == 1


def test_full_window_zoom_is_the_identity() -> None:
    imgs, hw = _shard_images()
    cfg = gpu_augment.AugmentConfig(p_hflip=0.0, p_vflip=0.0, p_zoom=1.0, zoom=(1.0, 1.0), p_gamma=0.0)
    np.testing.assert_allclose(_augment(imgs, hw, cfg), imgs / 255.0, atol=1e-6)


def test_gamma_keeps_the_range_and_the_order() -> None:
    imgs, hw = _shard_images()
    cfg = gpu_augment.AugmentConfig(p_hflip=0.0, p_vflip=0.0, p_zoom=0.0, p_gamma=1.0, gamma=(2.0, 2.0))
    out = _augment(imgs, hw, cfg)
    src = imgs / 255.0
    np.testing.assert_allclose(out, np.round(src**2 * 255) / 255, atol=1e-6)
    assert out.max() == 1.0 and out.min() == 0.0


def test_cosine_lr_warms_up_then_decays_to_the_floor() -> None:
    assert trainer.cosine_lr(1.0, 0, 0.0, warmup=10) == pytest.approx(0.1)
    assert trainer.cosine_lr(1.0, 50, 0.0, warmup=10) == pytest.approx(1.0)
    assert trainer.cosine_lr(1.0, 50, 0.5, warmup=10) == pytest.approx(0.51)
    assert trainer.cosine_lr(1.0, 50, 1.0, warmup=10) == pytest.approx(0.02)
    assert trainer.cosine_lr(1.0, 50, 3.0, warmup=10) == pytest.approx(0.02)  # past the budget: the floor


def _prepared_folder(root: Path) -> None:
    imgs, hw = _shard_images()
    root.mkdir(parents=True)
    np.save(root / "shard_0000.npy", imgs)
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "shard", "row", "group", "modality", "source", "split", "h", "w", "rank"])
        for i, (h, wd) in enumerate(hw):
            w.writerow([f"0000_{i:04d}", 0, i, f"g{i}", "us", "s", "val" if i == 0 else "train", h, wd, i])


def test_second_pack_takes_the_items_the_first_left_out(tmp_path: Path) -> None:
    from training import pack_shards

    _prepared_folder(tmp_path / "data")
    imgs, hw = _shard_images()
    first_two = sum(len(pack_shards.encode(imgs[i, :h, :w])) for i, (h, w) in enumerate(hw[:2]))
    n1 = pack_shards.pack(tmp_path / "data", tmp_path / "p1", max_mb=(first_two + 1) / 2**20)
    n2 = pack_shards.pack(
        tmp_path / "data", tmp_path / "p2", max_mb=100, exclude_ids=pack_shards.packed_ids([tmp_path / "p1"])
    )
    ids1 = [r["id"] for r in online_bundle.load_pack(tmp_path / "p1")[0]]
    ids2 = [r["id"] for r in online_bundle.load_pack(tmp_path / "p2")[0]]
    assert (n1, n2) == (2, 2) and not set(ids1) & set(ids2)
    assert ids1[0] == "0000_0000"  # the validation item travels in the first pack


def test_bundle_train_assemble_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher, student = tmp_path / "teacher.pt", tmp_path / "student.pt"
    save_checkpoint(build_model("swin_tiny_test"), teacher, "swin_tiny_test")
    save_checkpoint(build_model("swin_tiny_test"), student, "swin_tiny_test")
    _prepared_folder(tmp_path / "data")
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    assert (
        online.main(
            [
                "bundle",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(bundle),
                "--student",
                str(student),
                "--teacher",
                str(teacher),
            ]
        )
        == 0
    )
    assert {p.name for p in bundle.iterdir()} == {
        online_bundle.TEACHER_FILE,
        online_bundle.STUDENT_FILE,
        online_bundle.PACK_DIR,
    }
    half = torch.load(bundle / online_bundle.STUDENT_FILE, weights_only=True)
    assert half["arch"] == "swin_tiny_test"
    assert all(v.dtype == torch.float16 for v in half["state"].values() if v.is_floating_point())

    # a second pack holds the rest: no item twice
    assert (
        online.main(
            [
                "bundle",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(tmp_path / "second"),
                "--pack-only",
                "--exclude-pack",
                str(bundle / online_bundle.PACK_DIR),
            ]
        )
        == 0
    )
    assert not (tmp_path / "second" / online_bundle.TEACHER_FILE).exists()
    first_rows = online_bundle.load_pack(bundle / online_bundle.PACK_DIR)[0]
    second_rows = online_bundle.load_pack(tmp_path / "second" / online_bundle.PACK_DIR)[0]
    assert len(first_rows) == 4 and second_rows == []  # everything fitted into the first one

    assert (
        online.main(
            [
                "train",
                "--bundle",
                str(bundle),
                "--out",
                str(out),
                "--minutes",
                "0.02",
                "--device",
                "cpu",
                "--batch-size",
                "2",
                "--lr",
                "1e-3",
                "3e-3",
                "--val-items",
                "1",
                "--teacher-bf16",
                "--extra-pack",
                str(tmp_path / "second" / online_bundle.PACK_DIR),
            ]
        )
        == 0
    )
    with (out / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["student"] for r in rows} == {"0", "1"}
    last = [r for r in rows if r["student"] == "0"][-1]
    assert int(last["step"]) >= 1 and math.isfinite(float(last["val_mse"]))
    final = torch.load(out / "final_0.pt", weights_only=True)
    assert final["peak_lr"] == pytest.approx(1e-3) and final["step"] == int(last["step"])

    assembled = tmp_path / "assembled.pt"
    assert (
        online.main(["assemble", "--encoder", str(out / "final_0.pt"), "--base", str(student), "--out", str(assembled)])
        == 0
    )
    model, base = load_checkpoint(assembled), load_checkpoint(student)
    for k, v in model.image_encoder.state_dict().items():
        assert torch.equal(v, final["encoder"][k])
    for k, v in model.mask_decoder.state_dict().items():  # decoder and prompt encoder from the base
        assert torch.equal(v, base.mask_decoder.state_dict()[k])
