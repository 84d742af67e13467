"""Train the click path: the prompt encoder and mask decoder fine-tuned for box + clicks, image encoder frozen.

Each sample is one target mask on one slice of ``click_data.py`` (the student's cached embedding). The start
is what the app shows after a box: the **box-only decoder** (frozen, the shipped one) on a perturbed box
(the tight box grown by up to 10 % of its side). Then, as SAM trains its prompts, several rounds of clicks,
each placed on the current error by the challenge's rule (:func:`~medsam_desktop.core.evaluation.clicks.next_click`),
the clicks accumulating and the previous round's logits given as the mask prompt (detached); the loss
(BCE + Dice on the 256 frame, content region only) is the mean over rounds. Sampling is balanced over
modalities (each modality equally often). Validation: the 5-click protocol on the ``val`` slices, the value
is 1 - mean DSC over clicks 1..5 (lower is better; ``best.pt`` on improvement); with ``--tight-share`` the mean of
that value from perturbed and from tight boxes.

    python training/train_clicks.py --data /work/cache/clicks/data --out runs/clicks [--minutes 60]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsam_desktop.core.evaluation.clicks import next_click
from medsam_desktop.core.inference.boxes import mask_bbox
from medsam_desktop.model.click_decoder import CLICK_ARCH, MAX_POINTS, ClickDecoder, load_click_decoder, pad_points
from medsam_desktop.model.fuse import fuse_for_inference
from training.labelled_data import perturbed_box
from training.shards import ShardImages, model_input, read_manifest
from training.trainer import STEP_FIELDS, CsvLog, Trainer, cosine_lr

log = logging.getLogger("train_clicks")

SIDE = 256
TRAIN_ROUNDS = 6
EVAL_CLICKS = 5
MIN_BALANCED = 30


@dataclass
class Slice:
    """One slice of the click data: embedding (256, 64, 64) fp16, masks (K, 256, 256) bool, content size."""

    id: str
    embedding: np.ndarray
    masks: np.ndarray
    h: int
    w: int
    modality: str
    split: str
    image: np.ndarray | None = None  # (256, 256, 3) uint8 model-frame image, for a path with a refiner


def load_slices(folder: Path, images: Path | None = None) -> list[Slice]:
    """The click data's slices (those with at least one mask); with ``images`` (the prepared shards the data
    was made from) each with its model-frame image."""
    shards = items = None
    if images is not None:
        shards = ShardImages(images)
        items = {it.id: it for it in read_manifest(images)}
    out = []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path) as z:
            k = int(z["k"])
            if k == 0:
                continue
            masks = np.unpackbits(z["masks"], axis=1)[:, : SIDE * SIDE].reshape(k, SIDE, SIDE).astype(bool)
            image = None if shards is None else shards.get(items[path.stem])
            out.append(
                Slice(
                    path.stem, z["embedding"], masks, int(z["h"]), int(z["w"]), str(z["modality"]), str(z["split"]),
                    image,
                )
            )  # fmt: skip
    return out


def image_batch(slices: list[Slice]) -> torch.Tensor | None:
    """The slices' images as the refiner's (B, 3, 256, 256) float input in [0, 1], or None without images."""
    if any(s.image is None for s in slices):
        return None
    return model_input(np.stack([s.image for s in slices]))


def start_shift(side: float) -> int:
    """How far (model pixels) a start box's sides may move out for an object of this longer side (model px)."""
    return max(5, int(0.1 * side))


def start_box(mask: np.ndarray, rng: np.random.Generator, h: int, w: int, tight_share: float = 0.0) -> np.ndarray:
    """The tight box grown by 0..:func:`start_shift` px per side, inside the content; with probability
    ``tight_share`` the tight box itself (the challenge format's boxes). No draw is spent on it at 0, so runs
    without it keep their random streams."""
    bb = mask_bbox(mask)
    if tight_share > 0 and rng.random() < tight_share:
        return bb.astype(np.float32)
    side = max(bb[2] - bb[0], bb[3] - bb[1]) + 1
    return perturbed_box(mask, rng, (h, w), shift=start_shift(side))


class BoxOnly:
    """The frozen, shipped box-only decoder (fused, as the app runs it): embeddings + boxes -> logits."""

    def __init__(self, model: nn.Module) -> None:
        self.model = fuse_for_inference(model)

    @torch.no_grad()
    def __call__(self, emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.decode(emb[i : i + 1], boxes[i : i + 1])[0] for i in range(len(boxes))])


def clicks_for(
    logits: torch.Tensor, targets: np.ndarray, content: list[tuple[int, int]]
) -> list[tuple[float, float, float]]:
    """One click per sample ((x, y, label) in the model frame) from its current error inside the content; a
    sample without error repeats a neutral (-1) slot."""
    pred = (logits[:, 0] > 0).numpy()
    out = []
    for p, t, (h, w) in zip(pred, targets, content):
        c = next_click(p[:h, :w], t[:h, :w])
        out.append((0.0, 0.0, -1.0) if c is None else (float(c.x), float(c.y), 1.0 if c.positive else 0.0))
    return out


def click_rounds(
    net: ClickDecoder, emb: torch.Tensor, boxes: torch.Tensor, start: torch.Tensor, targets: np.ndarray,
    content: list[tuple[int, int]], rounds: int, image: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Per round of ``rounds``: (logits shown (B, 1, 256, 256), padded points (B, MAX_POINTS, 2), labels (B,
    MAX_POINTS)), each click from the error of the mask shown before it. Shown = the decoder's logits, or with
    ``image`` (a path with a refiner) their redrawing (:meth:`ClickDecoder.shown_logits`); the decoder's own logits
    stay the next round's mask prompt."""
    pts = torch.zeros(len(boxes), 0, 2)
    labs = torch.zeros(len(boxes), 0)
    prev, shown = start, start
    for _ in range(rounds):
        c = torch.tensor(clicks_for(shown.detach().float(), targets, content))
        pts = torch.cat([pts, c[:, None, :2]], dim=1)
        labs = torch.cat([labs, c[:, None, 2]], dim=1)
        p, lab = pad_points(pts, labs)
        logits, _ = net(emb, boxes, p, lab, prev.detach())
        shown = logits if image is None else net.shown_logits(image, logits, p, lab)
        yield shown, p, lab
        prev = logits


def run_clicks(
    net: ClickDecoder, emb: torch.Tensor, boxes: torch.Tensor, start: torch.Tensor, targets: np.ndarray,
    content: list[tuple[int, int]], rounds: int, image: torch.Tensor | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """The shown logits (B, 1, 256, 256) after each of ``rounds`` clicks (:func:`click_rounds`)."""
    return [shown for shown, _, _ in click_rounds(net, emb, boxes, start, targets, content, rounds, image)]


class ClickRounds(nn.Module):
    """The trained module: :func:`run_clicks` through ``decoder`` (what ``Trainer.step`` calls and clips)."""

    def __init__(self, decoder: ClickDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self, emb: torch.Tensor, boxes: torch.Tensor, start: torch.Tensor, targets: np.ndarray,
        content: list[tuple[int, int]], rounds: int,
    ) -> list[torch.Tensor]:  # fmt: skip
        return run_clicks(self.decoder, emb, boxes, start, targets, content, rounds)


def balanced(slices: list[Slice], n: int) -> list[Slice]:
    """The first ``n`` slices taken round-robin over modalities (file order within each)."""
    by_mod: dict[str, list[Slice]] = {}
    for s in slices:
        by_mod.setdefault(s.modality, []).append(s)
    out: list[Slice] = []
    for k in range(max((len(g) for g in by_mod.values()), default=0)):
        out += [g[k] for g in by_mod.values() if k < len(g)]
    return out[:n]


def content_mask(content: list[tuple[int, int]]) -> torch.Tensor:
    m = torch.zeros(len(content), 1, SIDE, SIDE)
    for i, (h, w) in enumerate(content):
        m[i, :, :h, :w] = 1
    return m


def bce_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * valid).sum((1, 2, 3)) / valid.sum((1, 2, 3))
    prob = torch.sigmoid(logits) * valid
    dice = 1 - (2 * (prob * target).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return (bce + dice).mean()


def dsc(logits: torch.Tensor, targets: np.ndarray, content: list[tuple[int, int]]) -> list[float]:
    pred = (logits[:, 0] > 0).numpy()
    out = []
    for p, t, (h, w) in zip(pred, targets, content):
        p, t = p[:h, :w], t[:h, :w]
        s = p.sum() + t.sum()
        out.append(1.0 if s == 0 else 2.0 * (p & t).sum() / s)
    return out


def pick_mask(masks: np.ndarray, rng: np.random.Generator, size_power: float = 0.0) -> np.ndarray:
    """One of a slice's (K, 256, 256) target masks: uniformly, or with ``size_power`` A > 0 with probability
    proportional to area**-A (small objects, e.g. cells under 100 px, drawn more often). No extra draw at 0."""
    if size_power <= 0:
        return masks[rng.integers(len(masks))]
    p = np.maximum(masks.sum(axis=(1, 2)), 1).astype(np.float64) ** -size_power
    return masks[rng.choice(len(masks), p=p / p.sum())]


def sample_batch(
    slices: list[Slice],
    weights: np.ndarray,
    rng: np.random.Generator,
    size: int,
    tight_share: float = 0.0,
    size_power: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, list[tuple[int, int]]]:
    idx = rng.choice(len(slices), size=size, p=weights)
    embs, boxes, targets, content = [], [], [], []
    for i in idx:
        s = slices[i]
        m = pick_mask(s.masks, rng, size_power)
        embs.append(torch.from_numpy(s.embedding.astype(np.float32)))
        boxes.append(torch.from_numpy(start_box(m, rng, s.h, s.w, tight_share)))
        targets.append(m)
        content.append((s.h, s.w))
    return torch.stack(embs), torch.stack(boxes), np.stack(targets), content


def validate(
    net: ClickDecoder, box_only: BoxOnly, val: list[Slice], masks_per_slice: int = 3, seed: int = 0,
    tight: bool = False,
) -> tuple[float, list[float]]:  # fmt: skip
    """The 5-click protocol on the first ``masks_per_slice`` masks of every validation slice (fixed boxes: seeded
    perturbed ones, or with ``tight`` the tight bboxes; a path with a refiner is scored on the masks it shows):
    (1 - mean DSC over clicks 1..5, mean DSC after the box and after each click)."""
    rng = np.random.default_rng(seed)
    per_click: list[list[float]] = [[] for _ in range(EVAL_CLICKS + 1)]
    net.eval()
    with torch.no_grad():
        for s in val:
            emb = torch.from_numpy(s.embedding.astype(np.float32))[None]  # once a slice, for each of its masks
            image = image_batch([s]) if net.refiner is not None else None
            for m in s.masks[:masks_per_slice]:
                box = torch.from_numpy(start_box(m, rng, s.h, s.w, 1.0 if tight else 0.0))[None]
                start = box_only(emb, box)
                per_click[0] += dsc(start, m[None], [(s.h, s.w)])
                outs = run_clicks(net, emb, box, start, m[None], [(s.h, s.w)], EVAL_CLICKS, image)
                for k, o in enumerate(outs, 1):
                    per_click[k] += dsc(o, m[None], [(s.h, s.w)])
    net.train()
    means = [float(np.mean(v)) for v in per_click]
    return 1.0 - float(np.mean(means[1:])), means


def validation_value(net: ClickDecoder, box_only: BoxOnly, val: list[Slice], tight_too: bool) -> float:
    """The run's validation value: :func:`validate` from perturbed boxes; with ``tight_too`` (a run with a tight
    share) the mean of that and the value from tight boxes. Each kind's DSC curve is logged."""
    values = []
    for tight in (False, True) if tight_too else (False,):
        v, means = validate(net, box_only, val, tight=tight)
        values.append(v)
        log.info("%s boxes: DSC box %.4f, clicks %s", "tight" if tight else "perturbed", means[0],
                 " ".join(f"{m:.4f}" for m in means[1:]))  # fmt: skip
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from click_data.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--student", type=Path, default=None, help="student weights (default: the bundled model)")
    ap.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this click checkpoint (e.g. the shipped one) instead of the box decoder",
    )
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-time budget (cosine lr over it)")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-items", type=int, default=30, help="validation slices (modality-balanced)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the decoder forward (loss in fp32)")
    ap.add_argument(
        "--tight-share", type=float, default=0.0,
        help="fraction of start boxes that are the tight bbox, as the challenge format's (default 0: all perturbed)",
    )  # fmt: skip
    ap.add_argument(
        "--size-power", type=float, default=0.0,
        help="draw a slice's object with probability proportional to area**-A (default 0: uniformly)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from medsam_desktop.model.checkpoint import load_checkpoint, sha256_of
    from medsam_desktop.model_files import student_checkpoint_path

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    student_path = args.student or student_checkpoint_path()
    student = load_checkpoint(student_path)
    if args.init_from is not None:
        net = load_click_decoder(args.init_from).train()
        log.info("click path initialised from %s", args.init_from)
    else:
        net = ClickDecoder.from_model(student).train()
    if net.refiner is not None:
        raise SystemExit(f"{args.init_from} has a pixel refiner: fine-tune the path without it (train_refiner.py)")
    box_only = BoxOnly(student)
    slices = load_slices(args.data)
    train = [s for s in slices if s.split == "train"]
    val = balanced([s for s in slices if s.split == "val"], args.val_items)
    counts = Counter(s.modality for s in train)
    # each modality equally often, except that a modality with fewer than MIN_BALANCED slices is not repeated more
    weights = np.array([1.0 / max(counts[s.modality], MIN_BALANCED) for s in train])
    weights /= weights.sum()
    log.info("train slices %s; validation %d slices, %d masks", dict(counts), len(val), sum(len(s.masks) for s in val))

    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"student_sha256": sha256_of(student_path), "max_points": MAX_POINTS, "lr": args.lr,
            "tight_share": args.tight_share, "size_power": args.size_power}  # fmt: skip
    trainer = Trainer(
        ClickRounds(net), opt, saved=net, out=args.out, arch=CLICK_ARCH, best_info=info, val_key="val_1_minus_dsc",
        val_label="val 1-DSC(clicks 1-5)", val_every=args.val_every, validate_at_stop=True,
        max_hours=args.minutes / 60, bf16=args.bf16, log=log,
    )  # fmt: skip
    trainer.resume()
    rng = np.random.default_rng([args.seed, trainer.state["step"]])

    def do_validate() -> float:
        return validation_value(net, box_only, val, tight_too=args.tight_share > 0)

    log.info("start: val %.4f", do_validate())
    budget_s = args.minutes * 60
    t0 = time.time()
    csv_log = CsvLog(args.out / "log.csv", STEP_FIELDS)

    def batches():
        while True:
            yield sample_batch(train, weights, rng, args.batch_size, args.tight_share, args.size_power)

    def step(batch) -> object:
        emb, boxes, targets, content = batch
        for g in opt.param_groups:
            g["lr"] = cosine_lr(args.lr, trainer.state["step"], (time.time() - t0) / budget_s, warmup=30)
        start = box_only(emb, boxes)
        target = torch.from_numpy(targets[:, None].astype(np.float32))
        valid = content_mask(content)
        rounds = int(rng.integers(1, TRAIN_ROUNDS + 1))

        def loss_fn(outs: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([bce_dice(o, target, valid) for o in outs]).mean()

        return trainer.step([emb, boxes, start, targets, content, rounds], loss_fn)

    def on_step(result, val: str) -> None:
        csv_log.row(trainer.step_row(result, val))
        if trainer.state["step"] % 20 == 0:
            log.info("step %d loss %.4f %.1f s/step", trainer.state["step"], result.loss, trainer.seconds_per_step())

    trainer.run(batches(), step, do_validate, on_step)
    csv_log.close()
    log.info("stopped at step %d, best val %.4f", trainer.state["step"], trainer.state["best_val"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
