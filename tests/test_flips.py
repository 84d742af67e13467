"""Random flips in distillation: content-only flips, per-variant teacher cache, teacher_cache.py and distill.py."""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from synthetic_pool import make_source_folder

from medsam_desktop import atomic
from medsam_desktop.core.inference.preprocess import preprocess_uint8
from training import distill, prepare_data, teacher_cache
from training.shards import (
    IDENTITY,
    ShardImages,
    ShardItem,
    TeacherCache,
    apply_variant,
    parse_variants,
    read_manifest,
)

FLIPS = ("hflip", "vflip")


class FakeEncoder(torch.nn.Module):
    """Deterministic, flip-sensitive stand-in for the teacher: 4x4 average pool tiled to 256 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0  # how many images went through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return F.avg_pool2d(x.float(), 4).repeat(1, 86, 1, 1)[:, :256]


class FakeTeacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = FakeEncoder()


def _prepare(root: Path) -> Path:
    """Shards from a prepare_data.py source folder plus a tall image (content narrower than 256)."""
    make_source_folder(root / "src")
    tall = np.random.default_rng(1).integers(0, 255, (160, 100), dtype=np.uint8)
    Image.fromarray(tall).save(root / "src" / "us" / "tall.png")
    out = root / "data"
    assert prepare_data.main(["--input", str(root / "src"), "--out", str(out), "--val-fraction", "0.3"]) == 0
    return out


def _target(image: np.ndarray) -> np.ndarray:
    """What FakeEncoder stores for one (256, 256, 3) uint8 image, in fp16 as the cache does."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    return FakeEncoder()(x)[0].numpy().astype(np.float16).astype(np.float32)


# --- apply_variant -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(100, 180), (256, 160), (192, 256)])
def test_flip_touches_only_the_content_region(h: int, w: int) -> None:
    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # padding non-zero on purpose
    hf, vf = apply_variant(img, h, w, "hflip"), apply_variant(img, h, w, "vflip")
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    np.testing.assert_array_equal(hf[:h, :w], img[rows, w - 1 - cols])
    np.testing.assert_array_equal(vf[:h, :w], img[h - 1 - rows, cols])
    for out in (hf, vf):
        np.testing.assert_array_equal(out[h:], img[h:])  # padding below untouched
        np.testing.assert_array_equal(out[:, w:], img[:, w:])  # padding right untouched
    assert not np.array_equal(hf, img) and not np.array_equal(vf, img)
    np.testing.assert_array_equal(apply_variant(hf, h, w, "hflip"), img)
    assert apply_variant(img, h, w, IDENTITY) is img
    with pytest.raises(ValueError):
        apply_variant(img, h, w, "rot90")


@pytest.mark.parametrize("shape", [(120, 200), (200, 120)])
def test_flip_equals_flipping_the_original_then_preprocessing(shape: tuple[int, int]) -> None:
    orig = np.random.default_rng(2).integers(0, 256, shape).astype(np.uint8)
    shard, info = preprocess_uint8(orig)
    h, w = info.resized_size
    assert h < 256 or w < 256
    for variant, flipped in (("hflip", orig[:, ::-1]), ("vflip", orig[::-1])):
        expected, _ = preprocess_uint8(np.ascontiguousarray(flipped))
        diff = np.abs(apply_variant(shard, h, w, variant).astype(int) - expected.astype(int))
        assert diff.max() <= 1  # uint8 rounding only
        assert not expected[h:].any() and not expected[:, w:].any()  # the realistic padding is bottom/right


def test_parse_variants() -> None:
    assert parse_variants("identity") == (IDENTITY,)
    assert parse_variants("vflip, hflip,vflip") == (IDENTITY, "vflip", "hflip")  # identity always, first
    with pytest.raises(ValueError):
        parse_variants("identity,rot90")


# --- TeacherCache -------------------------------------------------------------------------------------------


def test_variant_files_are_separate_and_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TeacherCache(tmp_path, "t")
    assert cache.path("0000_0001") == tmp_path / "teacher_t" / "0000_0001.npy"  # identity: unchanged name
    assert cache.path("0000_0001", "hflip") == tmp_path / "teacher_t" / "0000_0001.hflip.npy"
    with pytest.raises(ValueError):
        cache.path("0000_0001", "rot90")
    emb = np.random.default_rng(0).standard_normal((256, 64, 64)).astype(np.float32)
    cache.put("0000_0001", emb, "hflip")
    assert cache.has("0000_0001", "hflip") and not cache.has("0000_0001") and not cache.has("0000_0001", "vflip")
    got = cache.get("0000_0001", "hflip")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, emb.astype(np.float16))
    cache.put("0000_0001", emb * 2)
    np.testing.assert_array_equal(cache.get("0000_0001"), (emb * 2).astype(np.float16))
    assert sorted(p.name for p in cache.dir.iterdir()) == ["0000_0001.hflip.npy", "0000_0001.npy"]

    renames: list[tuple[Path, Path]] = []

    def crash(src: Path, dst: Path) -> None:  # the process dies between writing and renaming
        renames.append((Path(src), Path(dst)))
        raise OSError("killed")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError):
        cache.put("0000_0002", emb, "vflip")
    ((src, dst),) = renames
    assert dst == cache.path("0000_0002", "vflip") and src.parent == cache.dir and src.name.endswith(".npy")
    assert not cache.has("0000_0002", "vflip")  # never a half-written final file
    assert not src.exists()  # and no temp file left behind


# --- teacher_cache.py ---------------------------------------------------------------------------------------


def _item(i: int, split: str = "train") -> ShardItem:
    return ShardItem(f"0000_{i:04d}", 0, i, f"g{i}", "ct", "s", split, 256, 256, i)


def test_plan_order(tmp_path: Path) -> None:
    items = [_item(2), _item(0), _item(9, "val"), _item(1)]  # manifest order differs from rank order
    cache = TeacherCache(tmp_path, "t")
    variants = parse_variants("identity,hflip,vflip")
    got = [(it.id[-1], v) for it, v in teacher_cache.plan(items, cache, variants)]
    assert got == [
        ("9", IDENTITY),
        ("0", IDENTITY),
        ("1", IDENTITY),
        ("2", IDENTITY),
        ("0", "hflip"),
        ("1", "hflip"),
        ("2", "hflip"),
        ("0", "vflip"),
        ("1", "vflip"),
        ("2", "vflip"),
    ]
    got = [(it.id[-1], v) for it, v in teacher_cache.plan(items, cache, variants, block=2)]
    assert got == [
        ("9", IDENTITY),
        ("0", IDENTITY),
        ("1", IDENTITY),
        ("0", "hflip"),
        ("1", "hflip"),
        ("0", "vflip"),
        ("1", "vflip"),
        ("2", IDENTITY),
        ("2", "hflip"),
        ("2", "vflip"),
    ]
    cache.put("0000_0001", np.zeros((1,)), "hflip")
    got = [(it.id[-1], v) for it, v in teacher_cache.plan(items, cache, variants, limit=2)]
    assert ("1", "hflip") not in got and ("2", IDENTITY) not in got and len(got) == 6
    assert [v for _, v in teacher_cache.plan(items, cache, parse_variants("identity"))] == [IDENTITY] * 4


def test_teacher_cache_computes_each_variant_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _prepare(tmp_path)
    teacher = FakeTeacher()
    monkeypatch.setattr(teacher_cache, "load_teacher_spec", lambda spec: (teacher, "fake"))
    items = read_manifest(data)
    train, val = [it for it in items if it.split == "train"], [it for it in items if it.split == "val"]
    assert train and val and any(it.split == "proxy" for it in items)
    cached = train + val  # the agreement proxy is never trained on, so it gets no cached targets

    # default: identity only, as before
    assert teacher_cache.main(["--data", str(data), "--batch", "3"]) == 0
    assert teacher.image_encoder.images == len(cached)
    cache_dir = data / "teacher_fake"
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(f"{it.id}.npy" for it in cached)

    teacher.image_encoder.images = 0
    assert teacher_cache.main(["--data", str(data), "--batch", "3", "--variants", "identity,hflip,vflip"]) == 0
    assert teacher.image_encoder.images == 2 * len(train)  # identity was there already; validation gets no flips
    cache, images = TeacherCache(data, "fake"), ShardImages(data)
    for it in val:
        assert not cache.has(it.id, "hflip") and not cache.has(it.id, "vflip")
    for it in train:
        for v in (IDENTITY, *FLIPS):
            expected = _target(apply_variant(images.get(it), it.h, it.w, v))
            np.testing.assert_allclose(cache.get(it.id, v).astype(np.float32), expected, atol=1e-6)
    assert not list(cache_dir.glob("*.tmp.npy"))

    teacher.image_encoder.images = 0
    cache.path(train[0].id, "vflip").unlink()
    assert teacher_cache.main(["--data", str(data), "--variants", "hflip,vflip"]) == 0
    assert teacher.image_encoder.images == 1  # resumed: only the missing one
    with pytest.raises(SystemExit):
        teacher_cache.main(["--data", str(data), "--variants", "identity,rot90"])


# --- distill.py ---------------------------------------------------------------------------------------------


def _filled_cache(tmp_path: Path, tag: str = "fake") -> tuple[Path, list[ShardItem], TeacherCache, ShardImages]:
    """Identity for every item, hflip for the first 6 training items, vflip for items 3..8 (some both, some none)."""
    data = _prepare(tmp_path)
    items = read_manifest(data)
    cache, images = TeacherCache(data, tag), ShardImages(data)
    train = sorted((it for it in items if it.split == "train"), key=lambda it: it.rank)
    todo = [(it, IDENTITY) for it in items] + [(it, "hflip") for it in train[:6]]
    todo += [(it, "vflip") for it in train[3:9]]
    teacher_cache.fill(FakeEncoder(), todo, images, cache, torch.device("cpu"), batch_size=4)
    return data, items, cache, images


def test_flips_draw_only_cached_variants_paired_with_their_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, items, cache, images = _filled_cache(tmp_path)
    train = [it for it in items if it.split == "train"]
    seen: dict[str, set[str]] = {it.id: set() for it in train}
    original = distill.load_batch

    def checked(
        batch: list[ShardItem], imgs: ShardImages, c: TeacherCache, variants: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = original(batch, imgs, c, variants)
        assert variants is not None and len(variants) == len(batch)
        for it, v in zip(batch, variants):
            assert c.has(it.id, v), (it.id, v)
            seen[it.id].add(v)
        # each target is the teacher's output on exactly this (flipped) image
        expected = FakeEncoder()(x).numpy().astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(y.numpy(), expected, atol=1e-6)
        return x, y

    monkeypatch.setattr(distill, "load_batch", checked)
    batches = distill.Batches(train, cache, images, 4, 0, 1, random.Random(0), flips=True)
    for _ in range(20 * len(train) // 4):
        batches.next()
    for it in train:
        available = {v for v in (IDENTITY, *FLIPS) if cache.has(it.id, v)}
        assert seen[it.id] == available, it.id  # only cached ones, and each of them drawn at some point
    assert sum(len(s) > 1 for s in seen.values()) == 9


def test_flips_off_is_identity_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, items, cache, images = _filled_cache(tmp_path)
    train = [it for it in items if it.split == "train"]
    calls: list[tuple[list[str], list[str] | None]] = []
    original = distill.load_batch

    def record(
        batch: list[ShardItem], imgs: ShardImages, c: TeacherCache, variants: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(([it.id for it in batch], variants))
        return original(batch, imgs, c, variants)

    monkeypatch.setattr(distill, "load_batch", record)
    for rank in (0, 1):
        calls.clear()
        batches = distill.Batches(train, cache, images, 2, rank, 2, random.Random(3))
        outputs = [batches.next() for _ in range(12)]
        # the item order of the code before flips existed: shuffle the ready list, take rank::world
        ref_rng, expected = random.Random(3), []
        while len(expected) < 12:
            ready = [it for it in train if cache.has(it.id)]
            ref_rng.shuffle(ready)
            queue = ready[rank::2]
            while len(queue) >= 2:
                expected.append([it.id for it in queue[:2]])
                queue = queue[2:]
        assert [ids for ids, _ in calls] == expected[:12]
        assert all(v == [IDENTITY, IDENTITY] for _, v in calls)
        by_id = {it.id: it for it in train}
        for (ids, _), (x, y) in zip(calls, outputs):
            raw = np.stack([images.get(by_id[i]) for i in ids]).transpose(0, 3, 1, 2) / 255.0
            np.testing.assert_allclose(x.numpy(), raw, atol=1e-6)
            np.testing.assert_array_equal(y.numpy(), np.stack([cache.get(i) for i in ids]).astype(np.float32))


@pytest.mark.slow
def test_distill_cli_with_flips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from medsam_desktop.model import build_model, save_checkpoint
    from medsam_desktop.model.checkpoint import sha256_of

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model("swin_tiny_test"), teacher, "swin_tiny_test")
    data, *_ = _filled_cache(tmp_path, f"teacher-{sha256_of(teacher)[:8]}")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="distill"):
        assert (
            distill.main(
                [
                    "--data",
                    str(data),
                    "--out",
                    str(out),
                    "--teacher",
                    str(teacher),
                    "--flips",
                    "--batch-size",
                    "2",
                    "--max-steps",
                    "2",
                    "--val-every",
                    "2",
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
    assert "flipped targets available: hflip 6, vflip 6" in caplog.text
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]["step"] == 2


def test_oversample_repeats_a_modality_within_each_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, items, cache, images = _filled_cache(tmp_path)
    train = [it for it in items if it.split == "train"]
    by_id = {it.id: it for it in train}
    drawn: list[str] = []
    monkeypatch.setattr(distill, "load_batch", lambda batch, *a, **k: drawn.extend(it.id for it in batch))
    batches = distill.Batches(train, cache, images, 1, 0, 1, random.Random(0), repeats={"ct": 3})
    epoch = 3 * sum(it.modality == "ct" for it in train) + sum(it.modality != "ct" for it in train)
    for _ in range(2 * epoch):
        batches.next()
    for half in (drawn[:epoch], drawn[epoch:]):  # per epoch: CT items three times, the others once
        counts = {i: half.count(i) for i in by_id}
        assert all(n == (3 if by_id[i].modality == "ct" else 1) for i, n in counts.items()), counts
    assert distill.parse_repeats("ct=3, MR=2") == {"ct": 3, "mr": 2}
    for bad in ("ct", "ct=0", "ct=x", "=2"):
        with pytest.raises(argparse.ArgumentTypeError, match="MODALITY=COUNT"):
            distill.parse_repeats(bad)


def test_teacher_cache_plan_can_keep_to_some_modalities(tmp_path: Path) -> None:
    data = _prepare(tmp_path)
    items = read_manifest(data)
    cache = TeacherCache(data, "fake")
    jobs = teacher_cache.plan(items, cache, (IDENTITY,), modalities=frozenset({"ct"}))
    val = [it for it in items if it.split == "val"]
    assert [it for it, _ in jobs[: len(val)]] == val  # validation first, whatever its modality
    rest = [it for it, _ in jobs[len(val) :]]
    assert rest and all(it.modality == "ct" and it.split == "train" for it in rest)
    assert len(rest) == sum(it.modality == "ct" and it.split == "train" for it in items)


def test_freeze_bn_keeps_running_statistics_while_the_rest_trains() -> None:
    from medsam_desktop.model.registry import ENCODER_REGISTRY

    torch.manual_seed(0)
    encoder = ENCODER_REGISTRY["repvit_m0_6"]()
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    distill.train_mode(encoder, freeze_bn=True)
    assert encoder.training and bns and not any(m.training for m in bns)
    encoder(torch.rand(2, 3, 256, 256)).mean().backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))
    assert all(m.weight.grad is not None for m in bns)  # affine parameters still learn
    distill.train_mode(encoder)
    assert all(m.training for m in bns)
    encoder(torch.rand(2, 3, 256, 256))
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))


def test_student_step_applies_finite_updates_only() -> None:
    """The shared step of distill.py and distill_online.py: a NaN target leaves the weights untouched."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8)
    before = model.weight.detach().clone()
    loss, gnorm, applied = distill.student_step(model, opt, x, y.clone().fill_(float("nan")), clip=1.0, bf16=False)
    assert not applied and np.isnan(loss) and torch.equal(model.weight, before)
    loss, gnorm, applied = distill.student_step(model, opt, x, y, clip=1.0, bf16=True)
    assert applied and np.isfinite(loss) and gnorm > 0 and not torch.equal(model.weight, before)
