"""Make the shipped inference files of a student: OpenVINO IR of every network, each with a card.

From ``models/x.pt`` (and the int8 encoder ``models/x.encoder-int8.onnx`` made by ``quantize_encoder.py``) this
writes ``models/x.openvino/`` (see ``medsam_desktop.core.backends.shipped``): ``encoder-int8``, ``encoder``
(fp32), ``prepare``, ``decoder`` and ``decoder_b2``, each ``.xml`` + ``.bin`` and a card ``.md`` with both files'
sha256 and the sha256 of ``x.pt``. The folder is built beside the
target and swapped in whole. Then every network is checked on OpenVINO against torch fp32 on a test image.

Weights: the encoders as made (fp32; int8 where quantized); ``prepare`` and the decoders stored in fp16
(``--decoder-weights fp16``, the default: half the size, 18.8 -> 9.4 MB per decoder; OpenVINO expands them to its
inference precision when it compiles, so speed is unchanged; quality measured on the dev set, docs/performance.md).

    python training/export_runtime.py                       # the shipped student
    python training/export_runtime.py --weights other.pt    # writes other.openvino/ beside it
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from medsam_desktop.atomic import replace_folder
from medsam_desktop.core.backends.clicks import CLICKS_STEM
from medsam_desktop.core.backends.layout import ENCODER, ENCODER_INT8, NetworkFiles
from medsam_desktop.core.backends.shipped import (
    BIN_SHA_LABEL,
    SHA_LABEL,
    SHIPPED_STEMS,
    SOURCE_LABEL,
    find_int8_encoder,
    shipped_files,
)
from medsam_desktop.model_files import card_path, runtime_folder, sha256_of, student_weights_path, verify_against_card

log = logging.getLogger("export_runtime")

WHAT = {
    ENCODER_INT8: "image encoder with int8 convolutions ((1, 3, 256, 256) image in [0, 1] -> (1, 256, 64, 64) "
    "embedding), converted from `{int8}` (training/quantize_encoder.py)",
    ENCODER: "image encoder in fp32 ((1, 3, 256, 256) image in [0, 1] -> (1, 256, 64, 64) embedding)",
    "prepare": "the decoder's box-independent image side (embedding -> keys (1, 4096, 256), keys_pe_t (1, 256, 4096))",
    "decoder": "prompt encoder + mask decoder for 1 box (keys, keys_pe_t, boxes (1, 4) in the 256 model frame -> "
    "logits (1, 256, 256), iou (1,))",
    "clicks": "the click path: its own prompt encoder + mask decoder for box + clicks + the previous mask (embedding "
    "(1, 256, 64, 64), boxes (1, 4), points (1, 8, 2), labels (1, 8) with -1 for unused slots, mask_logits "
    "(1, 1, 256, 256), in the 256 model frame -> logits (1, 1, 256, 256), iou (1, 1)), from `{int8}` "
    "(training/train_clicks.py, training/export_clicks.py)",
    "refiner": "the click path's pixel refiner on a window of any size (image (1, 3, h, w) in [0, 1], the decoder's "
    "logits (1, 1, h, w), points (1, 8, 2) in the window frame, labels (1, 8) -> shown logits (1, 1, h, w); "
    "core/backends/refiner_window.py), from `{int8}` (training/train_refiner.py, training/export_clicks.py)",
    "decoder_b2": "prompt encoder + mask decoder for 2 boxes (keys, keys_pe_t, boxes (2, 4) in the 256 model frame "
    "-> logits (2, 256, 256), iou (2,))",
}

CARD = """# {folder}/{stem}

{what}. OpenVINO IR of `{weights}`, made by `training/export_runtime.py` (ONNX export of the fused network, opset
{opset}, then OpenVINO {ov_version} `convert_model`), weights stored in {storage}. Run by the app's default runtime
without torch (`medsam_desktop.core.backends.shipped`).

- **{sha_label}**: `{xml_sha}`
- **{bin_label}**: `{bin_sha}`
- **{source_label}**: `{source_sha}`
- **size**: {size_mb:.1f} MB (`.xml` + `.bin`)
- **check**: max abs difference to torch fp32 on a test image {diff}
- **licence**: Apache-2.0 (derived from LiteMedSAM, Apache-2.0); data terms: see `{weights_card}`
"""


#: networks whose weights may be stored in fp16 (``--decoder-weights``)
FP16_CANDIDATES = ("prepare", "decoder", "decoder_b2")


def convert(onnx: Path, xml: Path, fp16: bool) -> None:
    """ONNX -> OpenVINO IR (``xml`` + ``.bin``), weights stored in fp16 when ``fp16``, else as they are."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx)), str(xml), compress_to_fp16=fp16)


def write_card(xml: Path, weights: Path, source_sha: str, stem: str, int8_name: str, diff: str, storage: str) -> None:
    import openvino as ov

    from medsam_desktop.core.backends.export import OPSET

    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    text = CARD.format(
        folder=xml.parent.name,
        stem=stem,
        what=WHAT[stem].format(int8=int8_name),
        weights=weights.name,
        opset=OPSET,
        ov_version=ov.__version__.split("-")[0],
        storage=storage,
        sha_label=SHA_LABEL,
        xml_sha=sha256_of(xml),
        bin_label=BIN_SHA_LABEL,
        bin_sha=sha256_of(xml.with_suffix(".bin")),
        source_label=SOURCE_LABEL,
        source_sha=source_sha,
        size_mb=size / 2**20,
        diff=diff,
        weights_card=card_path(weights).name,
    )
    card_path(xml).write_text(text)


def check_against_torch(model: object, folder: Path, threads: int) -> dict[str, str]:
    """Max abs difference of each network on OpenVINO (f32 hint) to torch fp32 on one synthetic test image."""
    import torch

    from medsam_desktop.core.backends.openvino_backend import OpenVinoBackend
    from medsam_desktop.model.fuse import fuse_for_inference

    rng = np.random.default_rng(0)
    image = np.zeros((1, 3, 256, 256), np.float32)
    yy, xx = np.mgrid[:256, :256]
    image[:] = ((yy - 120) ** 2 + (xx - 130) ** 2 < 50**2) * 0.7 + 0.1 + rng.normal(0, 0.02, (256, 256))
    boxes = np.array([[70, 60, 190, 180], [10, 10, 60, 90], [100, 100, 100, 140]], np.float32)  # 2 + 1, degenerate
    net = fuse_for_inference(model).eval()  # type: ignore[arg-type]
    with torch.inference_mode():
        emb = net.encode(torch.from_numpy(image))
        logits, _ = net.decode(emb, torch.from_numpy(boxes))
    ref_emb, ref_logits = emb.numpy(), logits[:, 0].numpy()
    out = {}
    for stem, int8 in ((ENCODER, False), (ENCODER_INT8, True)):
        files = NetworkFiles.in_folder(folder, ".xml", encoder=folder / f"{stem}.xml")
        backend = OpenVinoBackend(files, threads=threads, precision="f32", cache=False)
        diff = float(np.abs(backend.encode(image) - ref_emb).max())
        out[stem] = f"{diff:.2e} on the embedding" + (" (int8: quantization error)" if int8 else "")
        if not int8:
            got, _ = backend.decode(ref_emb, boxes)
            diff = f"{float(np.abs(got - ref_logits).max()):.2e} on the logits of 3 boxes from the torch embedding"
            out.update(prepare=diff, decoder=diff, decoder_b2=diff)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="student weights (default: the shipped ones)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--decoder-weights",
        choices=("fp16", "fp32"),
        default="fp16",
        help="storage of prepare's and the decoders' weights (default fp16)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    from medsam_desktop.core.backends.export import export_onnx
    from medsam_desktop.model.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    weights = args.weights or student_weights_path()
    if args.weights is None:
        verify_against_card(weights)
    int8_onnx = find_int8_encoder(weights)  # quantized from these weights, verified
    model = load_checkpoint(weights)
    source_sha = sha256_of(weights)
    target = runtime_folder(weights)
    with tempfile.TemporaryDirectory(prefix="export-runtime-") as tmp_dir:
        tmp = Path(tmp_dir)
        onnx_dir, ir_dir = tmp / "onnx", tmp / target.name
        export_onnx(model, onnx_dir)
        ir_dir.mkdir()
        for stem in SHIPPED_STEMS:
            source = int8_onnx if stem == ENCODER_INT8 else onnx_dir / f"{stem}.onnx"
            convert(source, ir_dir / f"{stem}.xml", fp16=args.decoder_weights == "fp16" and stem in FP16_CANDIDATES)
        diffs = check_against_torch(model, ir_dir, args.threads)
        for stem in SHIPPED_STEMS:
            fp16 = args.decoder_weights == "fp16" and stem in FP16_CANDIDATES
            storage = "fp16" if fp16 else "int8 (convolutions) and fp32" if stem == ENCODER_INT8 else "fp32"
            write_card(ir_dir / f"{stem}.xml", weights, source_sha, stem, int8_onnx.name, diffs[stem], storage)
            log.info("%s: %s", stem, diffs[stem])
        for kept in target.glob(f"{CLICKS_STEM}.*"):  # the click path is exported by export_clicks.py: keep it
            shutil.copy2(kept, ir_dir / kept.name)
        replace_folder(ir_dir, target)
    shipped_files(weights, int8=True), shipped_files(weights, int8=False)  # as the app checks them
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    log.info("wrote %s (%.1f MB, %d files)", target, size, len(list(target.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
