"""Should ONNX Runtime or OpenVINO replace torch as the student's default backend? Measured on the dev set.

Every backend is built by ``core.backends.load_backend`` (the exported runtimes reuse its cached ONNX export), then
every dev case
is segmented by each backend in turn (order rotating per case) with the challenge algorithm. Reported per
backend: total seconds, speed-up and mask agreement (IoU of each label, averaged per case; mean and worst
case) against torch AT THE SAME PRECISION (fp32 runtimes vs torch fp32, bf16 runtimes vs torch bf16; OpenVINO
int8, whose int8 encoder has no torch twin and whose other parts run bf16, vs torch bf16), and
mean-over-modalities DSC. Issue #6's rules: a runtime replaces torch only if >= 1.3x faster end to end
with IoU >= 0.99 against the torch path; bf16 (and int8) is used only if DSC moves by less than 0.2 points
(against fp32 of the same runtime).

    .venv/bin/python benchmarks/backend_candidates.py [--limit N] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.cli.evaluate import modality_of
from medsam_desktop.core.backends import load_backend
from medsam_desktop.core.evaluation.metrics import evaluate_case
from medsam_desktop.core.inference.challenge import segment_challenge_case
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io.challenge_npz import read_challenge_gt, read_challenge_npz

try:
    from benchmarks._common import machine_line
    from benchmarks.dev_end_to_end import DEFAULT_DATA
except ImportError:  # run as a script from benchmarks/
    from _common import machine_line  # type: ignore[no-redef]
    from dev_end_to_end import DEFAULT_DATA  # type: ignore[no-redef]

REFERENCE = "torch"


def reference_of(label: str) -> str:
    """The torch configuration a backend is compared with: same precision (int8: torch bf16, the default here)."""
    return "torch-bf16" if label.endswith(("bf16", "int8")) else REFERENCE


def _fp32_of(label: str) -> str:
    """The fp32 configuration of the same runtime: ``openvino-int8`` -> ``openvino``."""
    return label.removesuffix("-bf16").removesuffix("-int8")


def label_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over labels present in either map of the per-label IoU (1.0 when both are empty)."""
    values = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    if not values:
        return 1.0
    ious = []
    for v in values:
        ma, mb = a == v, b == v
        ious.append(float(np.sum(ma & mb)) / max(1, int(np.sum(ma | mb))))
    return float(np.mean(ious))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    cases = sorted((args.data / "imgs").glob("*.npz"))[: args.limit or None]
    if not cases:
        raise SystemExit(f"no cases in {args.data / 'imgs'}")
    specs = {  # label -> (runtime, precision), all built like the app's (load_backend: cached ONNX export)
        REFERENCE: ("torch", "fp32"),
        "torch-bf16": ("torch", "bf16"),
        "onnxruntime": ("onnxruntime", "fp32"),
        "openvino": ("openvino", "fp32"),
        "openvino-bf16": ("openvino", "bf16"),
        "openvino-int8": ("openvino", "int8"),
    }
    backends = {}
    for label, (runtime, precision) in specs.items():
        backends[label] = load_backend("repvit_m0_6", threads=args.threads, precision=precision, runtime=runtime)
        if getattr(backends[label], "fallback_reason", None):
            raise SystemExit(f"{label}: {backends[label].fallback_reason}")
    labels = list(backends)
    predictors = {k: Predictor(b) for k, b in backends.items()}
    for p in predictors.values():  # warm-up (kernel selection, JIT)
        p.decode(p.encode(np.zeros((64, 64), np.uint8) + 100), np.array([5, 5, 40, 40]))
    seconds = {k: 0.0 for k in labels}
    ious: dict[str, list[float]] = {k: [] for k in labels}
    precision_ious: dict[str, list[float]] = defaultdict(list)  # reduced precision vs fp32 of the same runtime
    dsc: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in labels}
    for i, path in enumerate(cases):
        case = read_challenge_npz(path)
        gts = read_challenge_gt(args.data / "gts" / path.name)
        segs = {}
        for k in labels[i % len(labels) :] + labels[: i % len(labels)]:
            t0 = time.perf_counter()
            segs[k] = segment_challenge_case(predictors[k], case.volume.array, case.boxes)
            seconds[k] += time.perf_counter() - t0
            spacing = case.spacing_zyx if case.is_3d else None
            dsc[k][modality_of(path.name)].append(evaluate_case(segs[k], gts, spacing).dsc)
        for k in labels:
            ious[k].append(label_iou(segs[k], segs[reference_of(k)]))
            if k.endswith(("bf16", "int8")):
                precision_ious[k].append(label_iou(segs[k], segs[_fp32_of(k)]))
        print(
            f"{case.name:<52}" + "".join(f" {k} {ious[k][-1]:.4f}" for k in labels if k != reference_of(k)), flush=True
        )

    print()
    print(machine_line(args.threads))
    print(f"{len(cases)} dev cases, student weights; speed-up and IoU against torch at the same precision")
    print(f"{'backend':<16}{'seconds':>9}{'speed-up':>10}{'IoU mean':>10}{'IoU min':>9}{'DSC':>8}")
    mean_dsc = {k: float(np.mean([np.mean(v) for v in dsc[k].values()])) for k in labels}
    verdicts = []
    for k in labels:
        ref = reference_of(k)
        speed = seconds[ref] / seconds[k]
        print(
            f"{k:<16}{seconds[k]:>9.1f}{speed:>9.2f}x{np.mean(ious[k]):>10.4f}{min(ious[k]):>9.4f}{mean_dsc[k]:>8.4f}"
        )
        if k != ref:
            ok = speed >= 1.3 and np.mean(ious[k]) >= 0.99
            verdicts.append(
                f"{k} vs {ref}: {'meets' if ok else 'misses'} the runtime rule "
                f"({speed:.2f}x, IoU {np.mean(ious[k]):.4f})"
            )
    for k in labels:
        if k.endswith(("bf16", "int8")):
            fp32 = _fp32_of(k)
            move = 100 * (mean_dsc[k] - mean_dsc[fp32])
            verdicts.append(
                f"{k} vs {fp32}: DSC {move:+.2f} points, {seconds[fp32] / seconds[k]:.2f}x: "
                f"{'meets' if abs(move) < 0.2 else 'misses'} the reduced-precision rule "
                f"(masks: IoU {np.mean(precision_ious[k]):.4f}, min {min(precision_ious[k]):.4f})"
            )
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
