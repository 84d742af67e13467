"""Teacher agreement: how closely a student reproduces the teacher's masks on held-out pool slices, per modality.

The selection proxy for distilled checkpoints (never the 53 dev cases): on the held-out items of the
distillation data (``prepare_data.py``'s ``val`` and ``proxy`` splits, drawn by source volume/image and never
trained on; ``--split`` picks one of them), both models encode
each slice; boxes are drawn from the teacher's own masks (a seeded random box inside the content is decoded by
the teacher, the tight box around its mask is the prompt, as a user's box around a visible structure would be);
the teacher's mask for that prompt is the reference and the student's mask is scored against it with DSC and NSD
exactly as ``medsam-eval`` scores a 2D case (``evaluate_case``: the challenge's slab rule), in the 256 model frame.
Mean per modality and over modalities.

    python training/agreement.py --data /work/cache/distill/data --student runs/distill/best.pt [--items 400]
    python training/agreement.py --data ... --student A.pt --student B.pt      # candidates side by side
    python training/agreement.py --data ... --student A.pt --unseen-first 1100  # only what A cannot have seen

With two or more candidates a second table gives each one's paired difference to the first (the same prompts),
per modality and over modalities, with a 95 % bootstrap interval over slices (slices resampled within each
modality, 2,000 draws): a difference whose interval holds 0 is within the proxy's noise. The table names the
slices per modality: an interval from a handful of slices (fundus has 2 in ``val``) says little.

``--unseen-first N`` leaves out the first N non-validation items in rank order: what a run whose teacher cache
held N training items could have trained on before the proxy split existed (the shipped student: 1,100).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.shards import ShardImages, ShardItem, model_input, read_manifest

log = logging.getLogger("agreement")

MIN_MASK_PX = 16  # a teacher mask smaller than this gives no prompt (noise, not a structure)

Encoder = Callable[[np.ndarray], np.ndarray]  # (1, 3, 256, 256) float32 -> (1, 256, 64, 64)
Decoder = Callable[[np.ndarray, np.ndarray], np.ndarray]  # embedding, boxes (K, 4) model frame -> logits (K, 256, 256)


@dataclass(frozen=True)
class Agreement:
    """Per-modality mean DSC / NSD of student masks against teacher masks, the prompts scored, and every
    prompt's (DSC, NSD) per item id (for subsets: ``--csv``)."""

    dsc: dict[str, float]
    nsd: dict[str, float]
    prompts: dict[str, int]
    per_item: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def mean_dsc(self) -> float:
        return float(np.mean(list(self.dsc.values()))) if self.dsc else float("nan")

    @property
    def mean_nsd(self) -> float:
        return float(np.mean(list(self.nsd.values()))) if self.nsd else float("nan")


def tight_box(mask: np.ndarray) -> np.ndarray | None:
    """``[x0, y0, x1, y1]`` (inclusive pixels) around ``mask``, or None when it is smaller than MIN_MASK_PX."""
    if int(mask.sum()) < MIN_MASK_PX:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def random_boxes(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """``n`` boxes (n, 4) inside the (h, w) content, sides 10-60 % of the content."""
    side = rng.uniform(0.1, 0.6, (n, 2)) * np.array([w, h])
    lo = rng.uniform(0, 1, (n, 2)) * (np.array([w, h]) - side)
    return np.hstack([lo, lo + side]).astype(np.float32)


def teacher_prompts(
    decode: Callable[[np.ndarray], np.ndarray], h: int, w: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """The prompts a user's box around a visible structure would be: ``n`` random boxes inside the (h, w)
    content are decoded by the teacher (``decode``: boxes (n, 4) model frame -> logits (n, 256, 256)) and the
    tight box around each mask of at least MIN_MASK_PX pixels is kept, (K, 4) float32 (K may be 0). The one home
    of this rule: the agreement proxy, the click path's teacher targets and mask distillation draw the same way."""
    first = np.asarray(decode(random_boxes(rng, h, w, n)))[:, :h, :w] > 0
    boxes = [b for b in (tight_box(m) for m in first) if b is not None]
    return np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)


def score_item(
    image: np.ndarray, h: int, w: int, teacher: tuple[Encoder, Decoder], students: Sequence[tuple[Encoder, Decoder]],
    rng: np.random.Generator, boxes: int,
) -> list[list[tuple[float, float]]]:  # fmt: skip
    """For one (256, 256, 3) slice: per student, the (DSC, NSD) of each prompt from the teacher's masks."""
    from medsam_desktop.core.evaluation.metrics import evaluate_case

    x = model_input(image[None]).contiguous().numpy()
    t_enc, t_dec = teacher
    t_emb = t_enc(x)
    prompts = teacher_prompts(lambda b: t_dec(t_emb, b), h, w, boxes, rng)
    if not len(prompts):
        return [[] for _ in students]
    reference = t_dec(t_emb, prompts)[:, :h, :w] > 0
    # a prompt whose own teacher mask is empty marks no structure (its score would be NaN or 0 by chance): the
    # choice depends on the teacher alone, so every student is scored on the same prompts
    keep = [k for k, r in enumerate(reference) if r.any()]
    if not keep:
        return [[] for _ in students]
    prompt_arr, reference = np.stack([prompts[k] for k in keep]), reference[keep]
    out = []
    for s_enc, s_dec in students:
        got = s_dec(s_enc(x), prompt_arr)[:, :h, :w] > 0
        cases = [evaluate_case(g.astype(np.uint8), r.astype(np.uint8)) for g, r in zip(got, reference)]
        out.append([(c.dsc, c.nsd) for c in cases])
    return out


def agreement(
    items: Iterable[ShardItem], images: ShardImages, teacher: tuple[Encoder, Decoder],
    students: Sequence[tuple[Encoder, Decoder]], boxes: int = 3, seed: int = 0,
) -> list[Agreement]:  # fmt: skip
    """One :class:`Agreement` per student over ``items`` (the same prompts for every student)."""
    rng = np.random.default_rng(seed)
    scores: list[dict[str, list[tuple[float, float]]]] = [defaultdict(list) for _ in students]
    per_item: list[dict[str, list[tuple[float, float]]]] = [{} for _ in students]
    for n, item in enumerate(items, 1):
        per_student = score_item(images.get(item), item.h, item.w, teacher, students, rng, boxes)
        for k, pairs in enumerate(per_student):
            scores[k][item.modality].extend(pairs)
            per_item[k][item.id] = pairs
        if n % 50 == 0:
            log.info("%d slices scored", n)
    results = []
    for by_mod, by_item in zip(scores, per_item):
        dsc = {m: float(np.mean([d for d, _ in v])) for m, v in sorted(by_mod.items()) if v}
        nsd = {m: float(np.mean([n for _, n in v])) for m, v in sorted(by_mod.items()) if v}
        results.append(Agreement(dsc, nsd, {m: len(v) for m, v in sorted(by_mod.items())}, by_item))
    return results


def write_csv(path: Path, names: Sequence[str], items: Sequence[ShardItem], results: Sequence[Agreement]) -> None:
    """One row per student and prompt: student, item id, modality, split, rank, DSC, NSD."""
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "id", "modality", "split", "rank", "dsc", "nsd"])
        for name, result in zip(names, results):
            for it in items:
                for dsc, nsd in result.per_item.get(it.id, []):
                    writer.writerow([name, it.id, it.modality, it.split, it.rank, f"{dsc:.6f}", f"{nsd:.6f}"])


@dataclass(frozen=True)
class Difference:
    """A candidate minus the base on the same prompts: per modality and over modalities (key ``MEAN``),
    (mean, 2.5 %, 97.5 %) of the bootstrap over slices, for DSC and for NSD, and the slices compared."""

    dsc: dict[str, tuple[float, float, float]]
    nsd: dict[str, tuple[float, float, float]]
    slices: dict[str, int] = field(default_factory=dict)


MEAN = "mean over modalities"


def paired_difference(
    base: Agreement, other: Agreement, modality_of: dict[str, str], draws: int = 2000, seed: int = 0
) -> Difference:
    """``other - base`` per prompt, averaged as the tables average (per modality over its prompts, then over
    modalities), with a bootstrap that resamples slices within each modality (a slice keeps all its prompts)."""
    rng = np.random.default_rng(seed)
    per_mod: dict[str, list[tuple[np.ndarray, int]]] = defaultdict(list)  # modality -> (sum of diffs, count)
    for item_id, pairs in base.per_item.items():
        theirs = other.per_item.get(item_id, [])
        if not pairs or len(theirs) != len(pairs):
            continue
        diff = np.asarray(theirs, np.float64) - np.asarray(pairs, np.float64)  # (prompts, 2): DSC, NSD
        per_mod[modality_of[item_id]].append((diff.sum(0), len(diff)))
    means: dict[str, np.ndarray] = {}
    boots: dict[str, np.ndarray] = {}
    for mod, rows in sorted(per_mod.items()):
        sums, counts = np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], np.float64)
        means[mod] = sums.sum(0) / counts.sum()
        idx = rng.integers(0, len(rows), (draws, len(rows)))
        boots[mod] = sums[idx].sum(1) / counts[idx].sum(1)[:, None]  # (draws, 2)
    if means:
        means[MEAN] = np.mean([means[m] for m in means], axis=0)
        boots[MEAN] = np.mean([boots[m] for m in boots], axis=0)

    def summary(k: int) -> dict[str, tuple[float, float, float]]:
        return {m: (float(means[m][k]), *(float(q) for q in np.percentile(boots[m][:, k], [2.5, 97.5]))) for m in means}

    slices = {m: len(rows) for m, rows in sorted(per_mod.items())}
    return Difference(summary(0), summary(1), {**slices, MEAN: sum(slices.values())} if slices else {})


def difference_table(base: str, names: Sequence[str], diffs: Sequence[Difference]) -> str:
    """Markdown: each candidate minus ``base`` in points (DSC, NSD), with the 95 % interval per modality. The
    candidates must have been paired on the same slices (as :func:`agreement` scores them)."""
    if any(d.slices != diffs[0].slices for d in diffs):
        raise ValueError("the candidates were compared on different slices")
    mods = [m for m in diffs[0].dsc if m != MEAN] + [MEAN] if diffs and diffs[0].dsc else []
    head = "| modality | slices | " + " | ".join(f"{n} - {base} DSC | {n} - {base} NSD" for n in names) + " |"
    lines = [head, "|---" * (2 + 2 * len(names)) + "|"]

    def cell(v: tuple[float, float, float]) -> str:
        return f"{100 * v[0]:+.2f} [{100 * v[1]:+.2f}, {100 * v[2]:+.2f}]"

    for m in mods:
        cells = " | ".join(f"{cell(d.dsc[m])} | {cell(d.nsd[m])}" for d in diffs)
        lines.append(f"| {m} | {diffs[0].slices.get(m, 0)} | {cells} |")
    return "\n".join(lines)


HELD_OUT_SPLITS = {"held-out": ("val", "proxy"), "val": ("val",), "proxy": ("proxy",)}


def held_out(data: Path, n: int = 0, split: str = "held-out", unseen_first: int = 0) -> list[ShardItem]:
    """The first ``n`` (0: all) items of ``split`` (a key of HELD_OUT_SPLITS) by rank, the modality-balanced
    order, leaving out the first ``unseen_first`` non-validation items by rank (see the module docstring)."""
    items = sorted(read_manifest(data), key=lambda it: it.rank)
    seen = {it.id for it in [it for it in items if it.split != "val"][:unseen_first]}
    kept = [it for it in items if it.split in HELD_OUT_SPLITS[split] and it.id not in seen]
    return kept[:n] if n else kept


def torch_model(path: Path | None, threads: int) -> tuple[Encoder, Decoder]:
    """(encode, decode) of a checkpoint (None: the teacher) in torch fp32, the reference precision."""
    import torch

    from medsam_desktop.core.backends.torch_backend import TorchBackend
    from medsam_desktop.model.checkpoint import load_checkpoint, load_teacher

    torch.set_num_threads(threads)
    backend = TorchBackend(load_teacher() if path is None else load_checkpoint(path), precision="fp32")
    return backend.encode, lambda emb, b: backend.decode(emb, b)[0]


def table(names: Sequence[str], results: Sequence[Agreement]) -> str:
    """Markdown: one row per modality, DSC / NSD per candidate, the prompt count, and the mean over modalities."""
    mods = sorted({m for r in results for m in r.dsc})
    head = "| modality | prompts | " + " | ".join(f"{n} DSC | {n} NSD" for n in names) + " |"
    lines = [head, "|---" * (2 + 2 * len(names)) + "|"]
    for m in mods:
        cells = " | ".join(f"{r.dsc.get(m, float('nan')):.4f} | {r.nsd.get(m, float('nan')):.4f}" for r in results)
        lines.append(f"| {m} | {results[0].prompts.get(m, 0)} | {cells} |")
    means = " | ".join(f"**{r.mean_dsc:.4f}** | **{r.mean_nsd:.4f}**" for r in results)
    lines.append(f"| mean over modalities | {sum(results[0].prompts.values())} | {means} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from prepare_data.py")
    ap.add_argument("--student", type=Path, action="append", required=True, help="a candidate (repeatable)")
    ap.add_argument("--items", type=int, default=0, help="held-out slices, the first by rank (0: all)")
    ap.add_argument("--split", choices=sorted(HELD_OUT_SPLITS), default="held-out", help="val + proxy, or one")
    ap.add_argument("--unseen-first", type=int, default=0, help="leave out the first N non-validation items")
    ap.add_argument("--boxes", type=int, default=3, help="seed boxes per slice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv", type=Path, help="also write every prompt's scores here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    items = held_out(args.data, args.items, args.split, args.unseen_first)
    if not items:
        raise SystemExit(f"no {args.split} items in {args.data} (prepare_data.py --resplit makes the proxy split)")
    log.info("%d held-out slices (%s), %d seed boxes each", len(items), args.split, args.boxes)
    teacher = torch_model(None, args.threads)
    students = [torch_model(p, args.threads) for p in args.student]
    results = agreement(items, ShardImages(args.data), teacher, students, args.boxes, args.seed)
    names = [p.stem for p in args.student]
    print(table(names, results))
    if len(results) > 1:
        modality_of = {it.id: it.modality for it in items}
        diffs = [paired_difference(results[0], r, modality_of, seed=args.seed) for r in results[1:]]
        print()
        print(difference_table(names[0], names[1:], diffs))
    if args.csv:
        write_csv(args.csv, names, items, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
