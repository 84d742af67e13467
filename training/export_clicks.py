"""Ship a trained click path: ``models/x.clicks.pt`` (fp16 storage, card tying it to the student) and its OpenVINO
IR ``models/x.openvino/clicks.xml`` (+ ``refiner.xml`` for a path with a pixel refiner, any window size; cards as
the other shipped networks), checked against torch.

    python training/export_clicks.py --checkpoint runs/clicks/best.pt [--weights models/x.pt]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from medsam_desktop.core.backends.clicks import (
    CLICKS_STEM,
    REFINER_BIN_LABEL,
    REFINER_LABEL,
    REFINER_STEM,
    STUDENT_LABEL,
    click_weights_path,
    load_click_backend,
)
from medsam_desktop.core.backends.export import OPSET
from medsam_desktop.model_files import card_path, runtime_folder, sha256_of, student_weights_path
from training.export_runtime import convert, write_card

log = logging.getLogger("export_clicks")

CARD = """# {name}

The click path of `{weights}`: SAM's prompt encoder and mask decoder fine-tuned for a box + up to {slots} clicks +
the previous mask's logits (the image encoder frozen), by `training/train_clicks.py` on the student's embeddings
of pool slices (`training/click_data.py`: ground truth of Kvasir-SEG, CVC-ClinicDB and DSB2018 where the pool has
it, the teacher's own masks for boxes on every other modality; never the evaluation data). Loaded when the first
click comes; a box without clicks never uses it. Weights stored in fp16.{refiner}

- **sha256**: `{sha}`
- **{student_label}**: `{student_sha}`
- **training**: {made}step {step}, {val}
- **licence**: Apache-2.0 (derived from LiteMedSAM, Apache-2.0); data terms: the pool's sources include
  research-only terms (Kvasir-SEG, CVC-ClinicDB: research and education), see `{weights_card}`
"""


def validation_line(value: float | None, window_value: float | None = None) -> str:
    """The card's validation clause; a checkpoint that was never scored says so rather than print a number. A
    refiner's checkpoint (``train_refiner.py``) is scored inside held-out windows instead."""
    if window_value is not None:
        return f"validation 1 - mean DSC inside held-out windows {window_value:.4f} (train_refiner.py)"
    if value is None:
        return "validation not scored"
    return f"validation 1 - mean DSC over clicks 1-5 {value:.4f} (5-click protocol on held-out pool slices)"


def refiner_line(width: int) -> str:
    """The card's sentence on the pixel refiner (empty for a path without one)."""
    if not width:
        return ""
    return (
        f" It carries a pixel refiner (`model/mask_refiner.py`, width {width}) trained by `training/train_refiner.py`\n"
        "on the frozen path's own outputs: it redraws the mask shown after each click from the model-frame image, the\n"
        "logits and the clicks, in a window around the mask and the clicks (`core/backends/refiner_window.py`; the\n"
        "shipped IR is `refiner.xml`); the next click still gets the decoder's own logits."
    )


def export_onnx(decoder: object, path: Path) -> None:
    """The click network as ONNX: inputs embedding, boxes, points, labels, mask_logits; outputs logits, iou (a
    refiner is exported on its own, :func:`export_refiner_onnx`)."""
    import torch

    from medsam_desktop.model.click_decoder import MAX_POINTS

    inputs: tuple[torch.Tensor, ...] = (
        torch.zeros(1, 256, 64, 64),
        torch.tensor([[40.0, 40.0, 160.0, 150.0]]),
        torch.tensor([[[100.0, 90.0]] * MAX_POINTS]),
        torch.tensor([[1.0] + [-1.0] * (MAX_POINTS - 1)]),
        torch.zeros(1, 1, 256, 256),
    )
    names, outputs = ["embedding", "boxes", "points", "labels", "mask_logits"], ["logits", "iou"]

    class DecoderOnly(torch.nn.Module):  # the refiner, if any, is not part of this graph
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, embedding, boxes, points, labels, mask_logits):  # type: ignore[no-untyped-def]
            return self.net(embedding, boxes, points, labels, mask_logits)

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are static: the trace is what runs
        torch.onnx.export(
            DecoderOnly(decoder), inputs, str(path), input_names=names, output_names=outputs, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip


def export_refiner_onnx(refiner: object, path: Path) -> None:
    """The pixel refiner as ONNX with any window size: image (1, 3, h, w) in [0, 1], logits (1, 1, h, w), points
    (1, P, 2) window frame, labels (1, P) -> shown (1, 1, h, w) (``core.backends.refiner_window``)."""
    import torch

    from medsam_desktop.model.click_decoder import MAX_POINTS

    inputs = (torch.zeros(1, 3, 64, 80), torch.zeros(1, 1, 64, 80), torch.full((1, MAX_POINTS, 2), 20.0),
              torch.tensor([[1.0] + [-1.0] * (MAX_POINTS - 1)]))  # fmt: skip
    hw = {2: "height", 3: "width"}
    with torch.inference_mode():
        torch.onnx.export(
            refiner, inputs, str(path), input_names=["image", "logits", "points", "labels"], output_names=["shown"],
            dynamic_axes={"image": hw, "logits": hw, "shown": hw}, opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="best.pt of train_clicks.py")
    ap.add_argument("--weights", type=Path, default=None, help="student weights (default: the shipped ones)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    from medsam_desktop.core.backends.torch_clicks import TorchClickBackend
    from medsam_desktop.model.checkpoint import save_checkpoint_state
    from medsam_desktop.model.click_decoder import load_click_decoder

    torch.set_num_threads(args.threads)
    weights = args.weights or student_weights_path()
    student_sha = sha256_of(weights)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = dict(ckpt["config"])
    if config.get("student_sha256") != student_sha:
        raise SystemExit(f"{args.checkpoint} was trained on the embeddings of other weights than {weights.name}")
    out = click_weights_path(weights)
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint_state(state, out, config)
    card_path(out).write_text(
        CARD.format(
            name=out.name,
            weights=weights.name,
            slots=config["max_points"],
            sha=sha256_of(out),
            student_label=STUDENT_LABEL,
            student_sha=student_sha,
            made=f"{config['made']}; " if config.get("made") else "",
            step=config.get("step", 0),
            val=validation_line(config.get("val_1_minus_dsc"), config.get("val_1_minus_window_dsc")),
            weights_card=card_path(weights).name,
            refiner=refiner_line(config.get("refiner", 0)),
        )
    )
    decoder = load_click_decoder(out)
    folder = runtime_folder(weights)
    folder.mkdir(exist_ok=True)
    xml = folder / f"{CLICKS_STEM}.xml"
    refiner_xml = folder / f"{REFINER_STEM}.xml"
    with tempfile.TemporaryDirectory(prefix="export-clicks-") as tmp:
        onnx = Path(tmp) / "clicks.onnx"
        export_onnx(decoder, onnx)
        convert(onnx, xml, fp16=True)
        if decoder.refiner is not None:
            export_refiner_onnx(decoder.refiner, Path(tmp) / "refiner.onnx")
            convert(Path(tmp) / "refiner.onnx", refiner_xml, fp16=True)
    if decoder.refiner is None:  # a path without one: no stale refiner of an earlier path beside it
        for suffix in (".xml", ".bin", ".md"):
            refiner_xml.with_suffix(suffix).unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 0.1, (1, 256, 64, 64)).astype(np.float32)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) if decoder.refiner is not None else None
    args_ = (emb, np.array([40, 40, 160, 150], np.float32), np.array([[100, 90], [60, 70]], np.float32),
             np.array([1, 0], np.float32), rng.normal(0, 3, (256, 256)).astype(np.float32), image)  # fmt: skip
    _, _, ref = TorchClickBackend(decoder).decode_clicks(*args_)
    from medsam_desktop.core.backends.clicks import OpenVinoClickBackend

    diffs = []
    refiner = refiner_xml if decoder.refiner is not None else None
    for precision in ("f32", "bf16"):  # bf16: the app's precision where the CPU has it natively
        _, _, got = OpenVinoClickBackend(xml, precision=precision, refiner=refiner).decode_clicks(*args_)
        flipped = int(((got > 0) != (ref > 0)).sum())
        diffs.append(f"{precision} {float(np.abs(got - ref).max()):.2e} ({flipped} of 65536 mask pixels differ)")
    what = "decoder + refiner in its window" if refiner is not None else "decoder"
    diff = ", ".join(diffs) + f" on the shown logits of a box + 2 clicks ({what}; fp16 storage)"
    write_card(xml, weights, student_sha, CLICKS_STEM, out.name, diff, "fp16")
    if refiner is not None:  # the pair is tied: the click network's card names its refiner's sha256
        write_card(refiner, weights, student_sha, REFINER_STEM, out.name, diff, "fp16")
        with card_path(xml).open("a") as fh:
            fh.write(f"- **{REFINER_LABEL}**: `{sha256_of(refiner)}` (`{refiner.name}`, its pixel refiner)\n")
            fh.write(f"- **{REFINER_BIN_LABEL}**: `{sha256_of(refiner.with_suffix('.bin'))}` (its weights)\n")
    backend = load_click_backend(weights)  # as the app loads it
    log.info("wrote %s and %s (%s); the app loads %s", out, xml, diff, backend.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
