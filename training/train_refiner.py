"""Train the click path's pixel refiner on the frozen click path's own outputs (``model.mask_refiner``).

The decoder's chain of clicks is left exactly as it is: the refiner only redraws each click's mask from the image,
the logits and the clicks, and the next click still gets the decoder's own logits as its mask prompt. So the
training data are fixed: for up to ``--masks`` objects per slice of ``click_data.py`` (tight start boxes, as the
challenge gives them), the 5-click protocol runs through the frozen path once, and after ``--draws`` random clicks
of it a ``CROP`` x ``CROP`` window is kept (image, logits, clicks, target): centred on a small object, or on a
random point of a larger one's outline (the refiner sees :data:`~medsam_desktop.model.mask_refiner.RECEPTIVE_RADIUS`
px around each pixel, so a window teaches what the whole frame would). Slices of the ``train`` split train; ``val``
and ``proxy`` windows are the validation (mean DSC inside the windows, higher is better; ``best.pt`` is the click
path with the best refiner so far, loadable by ``load_click_decoder`` and ``export_clicks.py``).

    python training/train_refiner.py --data /work/cache/clicks/data --images /work/cache/distill/data \
        --init-from models/medsam_lite_repvit_m0_6.clicks.pt --out runs/refiner [--minutes 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medsam_desktop.model.click_decoder import CLICK_ARCH, MAX_POINTS, ClickDecoder, load_click_decoder
from medsam_desktop.model.mask_refiner import MaskRefiner
from training.train_clicks import EVAL_CLICKS, BoxOnly, Slice, bce_dice, click_rounds, load_slices, start_box
from training.trainer import STEP_FIELDS, CsvLog, Trainer, cosine_lr

log = logging.getLogger("train_refiner")

CROP = 96
#: the checkpoint's validation entry: 1 - mean DSC inside the held-out windows
VAL_KEY = "val_1_minus_window_dsc"
SMALL_SIDE = CROP // 2  # an object whose box side is under this fits its window whole


@dataclass
class Windows:
    """N training windows: image (N, 3, C, C) uint8, logits (N, 1, C, C) fp16, points (N, P, 2) window frame,
    labels (N, P), targets (N, C, C) bool, and the target's model-frame area per window."""

    image: torch.Tensor
    logits: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    area: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def window_origin(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (y, x) of the window for ``mask`` (256, 256): centred on a small object, on a random outline
    pixel of a larger one, always inside the frame."""
    ys, xs = np.nonzero(mask)
    if max(ys.max() - ys.min(), xs.max() - xs.min()) < SMALL_SIDE:
        cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    else:
        ey, ex = np.nonzero(mask & ~ndimage.binary_erosion(mask))
        k = rng.integers(len(ey))
        cy, cx = ey[k], ex[k]
    side = mask.shape[0]
    return int(np.clip(cy - CROP // 2, 0, side - CROP)), int(np.clip(cx - CROP // 2, 0, side - CROP))


def slice_objects(n: int, masks: int, how: str, rng: np.random.Generator) -> np.ndarray:
    """Indices of the (at most) ``masks`` objects of a slice with ``n``: the first ones, or (``random``) drawn
    without replacement, in order (no draw when all are taken)."""
    if n <= masks or how == "first":
        return np.arange(min(n, masks))
    return np.sort(rng.choice(n, size=masks, replace=False))


def make_windows(
    net: ClickDecoder, box_only: BoxOnly, slices: list[Slice], masks: int, draws: int, seed: int,
    objects: str = "random",
) -> Windows:  # fmt: skip
    """The windows of ``slices`` (see the module docstring), reproducible from ``seed``; ``objects`` as in
    :func:`slice_objects`."""
    rng = np.random.default_rng(seed)
    n_max = sum(min(len(s.masks), masks) for s in slices) * min(draws, EVAL_CLICKS)
    image = np.zeros((n_max, 3, CROP, CROP), np.uint8)
    logits = np.zeros((n_max, 1, CROP, CROP), np.float16)
    points = np.zeros((n_max, MAX_POINTS, 2), np.float32)
    labels = np.zeros((n_max, MAX_POINTS), np.float32)
    targets = np.zeros((n_max, CROP, CROP), bool)
    area = np.zeros(n_max, np.int64)
    n = 0
    with torch.no_grad():
        for done, s in enumerate(slices, 1):
            ms = s.masks[slice_objects(len(s.masks), masks, objects, rng)]
            emb = torch.from_numpy(s.embedding.astype(np.float32))[None]
            boxes = torch.from_numpy(np.stack([start_box(m, rng, s.h, s.w, 1.0) for m in ms]))
            content = [(s.h, s.w)] * len(ms)
            prev = box_only(emb.expand(len(ms), -1, -1, -1), boxes)
            rounds = click_rounds(net, emb, boxes, prev, ms, content, EVAL_CLICKS)
            outs = [(lg.numpy(), p.numpy(), lab.numpy()) for lg, p, lab in rounds]
            chw = s.image.transpose(2, 0, 1)
            for b, m in enumerate(ms):
                for k in rng.choice(EVAL_CLICKS, size=min(draws, EVAL_CLICKS), replace=False):
                    lg, p, lab = outs[k]
                    y0, x0 = window_origin(m, rng)
                    image[n] = chw[:, y0 : y0 + CROP, x0 : x0 + CROP]
                    logits[n] = lg[b, :, y0 : y0 + CROP, x0 : x0 + CROP]
                    points[n] = p[b] - np.array([x0, y0], np.float32)
                    labels[n] = lab[b]
                    targets[n] = m[y0 : y0 + CROP, x0 : x0 + CROP]
                    area[n] = int(m.sum())
                    n += 1
            if done % 200 == 0:
                log.info("windows: %d / %d slices", done, len(slices))
    return Windows(*(torch.from_numpy(a[:n]) for a in (image, logits, points, labels, targets, area)))


def balanced_subset(slices: list[Slice], per_modality: int, rng: np.random.Generator) -> list[Slice]:
    """At most ``per_modality`` slices of each modality, drawn at random (all of a smaller one)."""
    by_mod: dict[str, list[Slice]] = {}
    for s in slices:
        by_mod.setdefault(s.modality, []).append(s)
    out: list[Slice] = []
    for group in by_mod.values():
        idx = rng.permutation(len(group))[:per_modality]
        out += [group[i] for i in sorted(idx)]
    return out


def window_batch(w: Windows, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (w.image[idx].float() / 255.0, w.logits[idx].float(), w.points[idx], w.labels[idx])


def window_dsc(refiner: MaskRefiner | None, w: Windows, batch: int = 64) -> np.ndarray:
    """DSC inside each window of the refined (or, with None, the decoder's own) mask, (N,)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(w), batch):
            idx = np.arange(i, min(i + batch, len(w)))
            image, logits, points, labels = window_batch(w, idx)
            pred = (logits if refiner is None else refiner(image, logits, points, labels))[:, 0] > 0
            t = w.targets[idx]
            inter = (pred & t).sum((1, 2)).float()
            total = (pred.sum((1, 2)) + t.sum((1, 2))).float()
            out.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from click_data.py")
    ap.add_argument("--images", type=Path, required=True, help="the prepared shards the click data was made from")
    ap.add_argument("--init-from", type=Path, required=True, help="the click path to refine (e.g. the shipped one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--masks", type=int, default=4, help="objects per slice (at most)")
    ap.add_argument(
        "--objects",
        choices=("random", "first"),
        default="random",
        help="which objects of a slice with more than --masks (session 15's run: first)",
    )
    ap.add_argument("--windows-only", action="store_true", help="stop once the windows are made and cached")
    ap.add_argument("--draws", type=int, default=2, help="windows per object (after random clicks)")
    ap.add_argument("--per-modality", type=int, default=150, help="training slices per modality (at most)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from medsam_desktop.model.checkpoint import load_checkpoint, sha256_of
    from medsam_desktop.model_files import student_checkpoint_path

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    student_path = student_checkpoint_path()
    net = load_click_decoder(args.init_from).eval()
    replaced = net.refiner is not None
    if replaced:  # the windows depend on the decoder alone; the new refiner starts from zero
        log.info("%s has a refiner: it is replaced", args.init_from)
        net.refiner = None
    box_only = BoxOnly(load_checkpoint(student_path))
    cache = args.out / "windows.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    if cache.is_file():
        train, val = (Windows(**d) for d in torch.load(cache, weights_only=True))
    else:
        t0 = time.time()
        slices = load_slices(args.data, args.images)
        pick = balanced_subset([s for s in slices if s.split == "train"], args.per_modality, np.random.default_rng(0))
        held_out = balanced_subset([s for s in slices if s.split in ("val", "proxy")], args.per_modality // 2,
                                   np.random.default_rng(1))  # fmt: skip
        log.info("windows of %d training and %d held-out slices", len(pick), len(held_out))
        train = make_windows(net, box_only, pick, args.masks, args.draws, 0, args.objects)
        val = make_windows(net, box_only, held_out, args.masks, 1, 1, args.objects)
        torch.save([vars(train), vars(val)], cache)
        log.info("windows made in %.0f s", time.time() - t0)
        del slices
    if args.windows_only:
        log.info("windows cached in %s", cache)
        return 0
    log.info("%d training windows, %d validation windows", len(train), len(val))
    base = window_dsc(None, val)
    small = (val.area < 100).numpy()
    log.info("decoder alone: window DSC %.4f (objects < 100 px: %.4f)", base.mean(), base[small].mean())

    net.refiner = MaskRefiner(args.width)
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith("refiner."))
    opt = torch.optim.AdamW(net.refiner.parameters(), lr=args.lr, weight_decay=0.01)
    info = {"student_sha256": sha256_of(student_path), "max_points": MAX_POINTS, "refiner": args.width,
            "made": f"pixel refiner on the frozen click path sha256 {sha256_of(args.init_from)[:16]}"
                    + (" (its refiner replaced)" if replaced else "")}  # fmt: skip
    trainer = Trainer(
        net.refiner, opt, saved=net, out=args.out, arch=CLICK_ARCH, best_info=info, val_key=VAL_KEY,
        val_label="val 1-window DSC", val_every=args.val_every, validate_at_stop=True, max_hours=args.minutes / 60,
        log=log,
    )  # fmt: skip
    rng = np.random.default_rng([args.seed, 1])
    t0 = time.time()
    csv_log = CsvLog(args.out / "log.csv", STEP_FIELDS)

    def do_validate() -> float:
        d = window_dsc(net.refiner, val)
        log.info("window DSC %.4f (objects < 100 px: %.4f)", d.mean(), d[small].mean())
        return 1.0 - float(d.mean())

    def stream():  # epochs of shuffled windows
        while True:
            perm = rng.permutation(len(train))
            for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):
                yield perm[i : i + args.batch_size]

    def step(idx) -> object:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(args.lr, trainer.state["step"], (time.time() - t0) / (args.minutes * 60), warmup=50)
        image, logits, points, labels = window_batch(train, idx)
        target = train.targets[idx][:, None].float()

        def loss_fn(out: torch.Tensor) -> torch.Tensor:  # the click path's loss over the whole window
            return bce_dice(out, target, torch.ones_like(target))

        return trainer.step([image, logits, points, labels], loss_fn)

    def on_step(result, val_text: str) -> None:
        csv_log.row(trainer.step_row(result, val_text))
        if trainer.state["step"] % 100 == 0:
            log.info("step %d loss %.4f", trainer.state["step"], result.loss)

    trainer.run(stream(), step, do_validate, on_step)
    csv_log.close()
    log.info("stopped at step %d, best val %.4f", trainer.state["step"], trainer.state["best_val"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
