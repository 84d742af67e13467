"""Quantize the student's image encoder to int8 for OpenVINO and ship it beside the weights with its card.

Post-training static quantization of the fused, exported encoder (``core.backends.export.export_onnx``) with
ONNX Runtime's quantization tool, in QDQ form, which OpenVINO compiles into int8 convolutions:

* only the dense convolutions are quantized (stem, pointwise, neck: nearly all of the multiply-adds): int8
  weights (per output channel, symmetric) and uint8 inputs (per tensor). Depthwise and squeeze-excite
  convolutions stay float: they are ~2 % of the time, and quantizing them carried most of the error
  (embedding MSE against the fp32 student over 8 held-out images x 10 modalities: 48.5e-6 with them, 18.0e-6
  without, same speed);
* convolution outputs stay float, so OpenVINO fuses the bias, GELU and the next convolution's input
  quantization into each convolution (quantizing the outputs too put a separate quantize/dequantize pass after
  every convolution: OpenVINO profile 55.6 -> 38.6 ms per slice without them);
* activation ranges are the moving average of per-image min/max over ``--per-modality`` training images of
  each modality of the distillation pool (plain min/max over 128 images took the rare extremes and tripled
  the error; drawing per modality rather than at random from an endoscopy-heavy pool cut it by 12 %).

The result is checked against the teacher's cached embeddings on the validation items (the distillation
metric) and against the fp32 student, both printed and written into the card. Only the card's figures and
the file travel into ``models/``; the app never quantizes (``core.backends.shipped``);
``training/export_runtime.py`` then converts it to the shipped OpenVINO IR.

    python training/quantize_encoder.py --data /work/cache/distill/data          # the shipped student
    python training/quantize_encoder.py --data ... --checkpoint other.pt --out-dir /tmp/q
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from medsam_desktop.atomic import atomic_write
from medsam_desktop.core.backends.shipped import int8_card_path, int8_encoder_path
from medsam_desktop.model.checkpoint import load_checkpoint, sha256_of, student_checkpoint_path, verify_against_card
from medsam_desktop.paths import models_dir
from training.shards import ShardImages, ShardItem, TeacherCache, model_input, read_manifest

log = logging.getLogger("quantize_encoder")

CARD_TEMPLATE = """# {file}

The image encoder of `{weights}` with int8 convolutions, for OpenVINO (`--runtime openvino --precision int8`,
or Settings > Precision > int8). Made by `training/quantize_encoder.py`; everything else (prompt encoder, mask
decoder) comes from the weights file as usual.

- **sha256**: `{sha}`
- **source weights sha256**: `{source_sha}`
- **size**: {size_mb:.1f} MB
- **method**: post-training static quantization (ONNX Runtime {ort_version} quantization tool, QDQ form):
  dense convolutions only (depthwise and squeeze-excite stay float), int8 weights per output channel, uint8
  activations per tensor, activation ranges = moving average of per-image min/max over {n_cal} training images
  of the distillation pool ({per_mod} per modality, seed {seed})
- **hardware**: {hardware}
- **licence**: Apache-2.0 (derived from LiteMedSAM, Apache-2.0)

## Embedding error (MSE on the 256x64x64 embedding)

On the {n_val} validation items of the distillation (the distillation metric):

| encoder | MSE vs teacher | MSE vs fp32 student |
|---|---:|---:|
| student fp32 (torch) | {mse_fp32:.5f} | 0 |
| student int8 (OpenVINO, hint {hint}) | {mse_int8:.5f} | {mse_int8_fp32:.6f} |

Against the fp32 student on {n_held} held-out training images per modality (not used for calibration), x1e-6:

{held_table}

## Dev set

{table}
"""


def pool_image(images: ShardImages, item: ShardItem) -> np.ndarray:
    """A prepared pool image as the encoder's input: contiguous (1, 3, 256, 256) float32 in [0, 1]."""
    return model_input(images.get(item)[None]).contiguous().numpy()


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over an iterable of encoder inputs."""

    def __init__(self, inputs: Iterable[np.ndarray], name: str = "image") -> None:
        self._it: Iterator[np.ndarray] = iter(inputs)
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}


def float_convolutions(model_path: Path) -> list[str]:
    """Names of the convolutions left float: depthwise (group > 1) and squeeze-excite (``/se/`` in the name,
    the exporter's module path of :class:`~medsam_desktop.model.repvit.SqueezeExcite`)."""
    import onnx

    names = []
    for node in onnx.load(str(model_path)).graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group > 1 or "/se/" in node.name:
            names.append(node.name)
    return names


def quantize_encoder_onnx(src: Path, dst: Path, calibration: Iterable[np.ndarray]) -> None:
    """fp32 encoder ONNX ``src`` -> int8 QDQ ONNX ``dst`` (see the module docstring for the choices)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=float_convolutions(pre),
            extra_options={"CalibMovingAverage": True, "OpTypesToExcludeOutputQuantization": ["Conv"]},
        )


def split_by_modality(
    items: list[ShardItem], per_modality: int, held_out: int, seed: int
) -> tuple[list[ShardItem], dict[str, list[ShardItem]]]:
    """(calibration items: up to ``per_modality`` of each modality, held-out items: up to ``held_out`` others of
    each modality), drawn reproducibly; the two never overlap."""
    rng = random.Random(seed)
    by_mod: dict[str, list[ShardItem]] = {}
    for it in items:
        by_mod.setdefault(it.modality, []).append(it)
    calibration, held = [], {}
    for mod in sorted(by_mod):
        pool = sorted(by_mod[mod], key=lambda it: it.id)
        rng.shuffle(pool)
        held[mod] = pool[:held_out]
        calibration += pool[held_out : held_out + per_modality]
    return calibration, held


def embedding_mse(
    encode: Callable[[np.ndarray], np.ndarray],
    images: ShardImages,
    items: list[ShardItem],
    target: Callable[[ShardItem, np.ndarray], np.ndarray],
) -> float:
    """Mean squared error of ``encode(x)[0]`` against ``target(item, x)`` over ``items`` (one image at a time)."""
    total = 0.0
    for item in items:
        x = pool_image(images, item)
        total += float(np.mean((encode(x)[0] - target(item, x)) ** 2))
    return total / max(len(items), 1)


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def install_int8_encoder(int8: Path, weights: Path, out_dir: Path, fields: dict[str, object]) -> tuple[Path, Path]:
    """Copy ``int8`` to ``out_dir/<weights stem>.encoder-int8.onnx`` and write its card (``CARD_TEMPLATE`` with
    ``fields`` plus the file names and both sha256), each atomically, the card last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / int8_encoder_path(weights).name
    _write_atomic(final, int8.read_bytes())
    card = CARD_TEMPLATE.format(
        file=final.name,
        weights=Path(weights).name,
        sha=sha256_of(final),
        source_sha=sha256_of(weights),
        size_mb=final.stat().st_size / 2**20,
        **fields,
    )
    card_path = int8_card_path(final)
    _write_atomic(card_path, card.encode())
    return final, card_path


def held_markdown(held_mse: dict[str, float]) -> str:
    """Per-modality MSE (x1e-6) as a one-row markdown table, with the mean."""
    mods = list(held_mse)
    head = "| " + " | ".join([*mods, "mean"]) + " |\n|" + "---:|" * (len(mods) + 1) + "\n"
    vals = [held_mse[m] * 1e6 for m in mods] + [float(np.mean(list(held_mse.values()))) * 1e6]
    return head + "| " + " | ".join(f"{v:.1f}" for v in vals) + " |"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from prepare_data.py (+ teacher cache)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="student weights (default: the shipped ones)")
    ap.add_argument("--teacher-tag", default="litemedsam", help="teacher cache to score against")
    ap.add_argument("--per-modality", type=int, default=16, help="calibration images per modality")
    ap.add_argument("--held-out", type=int, default=8, help="held-out training images per modality for the report")
    ap.add_argument("--val-items", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-table", type=Path, default=None, help="markdown table for the card's dev-set section")
    ap.add_argument("--hardware", default=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: beside the weights")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import onnxruntime
    import torch

    from medsam_desktop.core.backends.export import export_onnx
    from medsam_desktop.core.backends.layout import NetworkFiles
    from medsam_desktop.core.backends.openvino_backend import OpenVinoBackend
    from medsam_desktop.core.backends.torch_backend import resolve_precision
    from medsam_desktop.model.fuse import fuse_for_inference

    torch.set_num_threads(args.threads)
    weights = args.checkpoint or student_checkpoint_path()
    if weights is None:
        raise SystemExit("no student weights: pass --checkpoint")
    if args.checkpoint is None:
        verify_against_card(weights)
    model = load_checkpoint(weights)
    items = read_manifest(args.data)
    images, cache = ShardImages(args.data), TeacherCache(args.data, args.teacher_tag)
    train = [it for it in items if it.split == "train"]
    val = [it for it in items if it.split == "val" and cache.has(it.id)][: args.val_items]
    calibration, held = split_by_modality(train, args.per_modality, args.held_out, args.seed)
    out_dir = args.out_dir or weights.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    hint = {"bf16": "bf16", "fp32": "f32"}[resolve_precision("auto")]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        export_onnx(model, tmp)
        int8 = tmp / "encoder-int8.onnx"
        log.info("calibrating on %d training images", len(calibration))
        quantize_encoder_onnx(tmp / "encoder.onnx", int8, (pool_image(images, it) for it in calibration))
        backend = OpenVinoBackend(
            NetworkFiles.in_folder(tmp, ".onnx", encoder=int8), threads=args.threads, precision=hint, cache=False
        )
        net = fuse_for_inference(model).eval()

        def fp32(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net.image_encoder(torch.from_numpy(x)).numpy()

        def teacher(item: ShardItem, x: np.ndarray) -> np.ndarray:
            return cache.get(item.id).astype(np.float32)

        def student(item: ShardItem, x: np.ndarray) -> np.ndarray:
            return fp32(x)[0]

        mse_fp32 = embedding_mse(fp32, images, val, teacher)
        mse_int8 = embedding_mse(backend.encode, images, val, teacher)
        mse_int8_fp32 = embedding_mse(backend.encode, images, val, student)
        log.info(
            "validation MSE vs teacher: fp32 %.5f, int8 %.5f; int8 vs fp32 %.6f (%d items)",
            mse_fp32,
            mse_int8,
            mse_int8_fp32,
            len(val),
        )
        held_mse = {mod: embedding_mse(backend.encode, images, its, student) for mod, its in held.items() if its}
        for mod, v in held_mse.items():
            log.info("held-out %-12s int8 vs fp32 %.1fe-6", mod, v * 1e6)
        table = args.eval_table.read_text() if args.eval_table and args.eval_table.is_file() else "(not evaluated)"
        fields = dict(
            ort_version=onnxruntime.__version__,
            n_cal=len(calibration),
            seed=args.seed,
            hardware=args.hardware,
            n_val=len(val),
            mse_fp32=mse_fp32,
            mse_int8=mse_int8,
            mse_int8_fp32=mse_int8_fp32,
            hint=hint,
            table=table,
            per_mod=args.per_modality,
            n_held=args.held_out,
            held_table=held_markdown(held_mse),
        )
        final, card_path = install_int8_encoder(int8, weights, out_dir, fields)
    log.info("wrote %s (%.1f MB) and %s", final, final.stat().st_size / 2**20, card_path)
    if out_dir == models_dir():
        log.info("shipped: the app's OpenVINO int8 precision now uses it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
