"""The exported image side with batched (3-D) transposes, as shipped since session 12, against the 2-D transpose
copy the export traced before (torch's faster form for one image): ``prepare`` and the click network, exported
both ways from the shipped weights, compiled on OpenVINO at the app's precision rule (bf16 where the CPU has it
natively, else f32), timed interleaved in one process. Outputs must be identical; the last line is the ratio.

    .venv/bin/python benchmarks/export_transposes.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

INPUT_NAMES = ("embedding", "boxes", "points", "labels", "mask_logits")  # of both exported networks


def _exports(folder: Path, two_d: bool) -> dict[str, Path]:
    """ONNX of ``prepare`` and ``clicks`` from the shipped weights; ``two_d``: the pre-session-12 transposes."""
    import torch

    from medsam_desktop.core.backends.clicks import click_weights_path
    from medsam_desktop.core.backends.export import export_onnx
    from medsam_desktop.model import single_mask
    from medsam_desktop.model.checkpoint import load_checkpoint
    from medsam_desktop.model.click_decoder import load_click_decoder
    from medsam_desktop.model_files import student_checkpoint_path, student_weights_path
    from training.export_clicks import export_onnx as export_clicks

    shipped = single_mask._transposed

    def old_form(x: torch.Tensor) -> torch.Tensor:
        return x[0].t().contiguous().unsqueeze(0) if x.shape[0] == 1 else shipped(x)

    single_mask._transposed = old_form if two_d else shipped
    try:
        export_onnx(load_checkpoint(student_checkpoint_path()), folder / "student")
        export_clicks(load_click_decoder(click_weights_path(student_weights_path())), folder / "clicks.onnx")
    finally:
        single_mask._transposed = shipped
    return {"prepare": folder / "student" / "prepare.onnx", "clicks": folder / "clicks.onnx"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    import openvino as ov

    try:
        from benchmarks._common import machine_line, median_ms
    except ImportError:  # run as a script from benchmarks/
        from _common import machine_line, median_ms  # type: ignore[no-redef]
    from medsam_desktop.core.backends.openvino_backend import native_bf16

    core = ov.Core()
    precision = "bf16" if native_bf16(core) else "f32"
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    config["INFERENCE_NUM_THREADS"] = args.threads
    rng = np.random.default_rng(0)
    print(machine_line(args.threads), f"precision {precision}")
    print("| network | 2-D transposes (before) ms | batched (shipped) ms | max abs difference |")
    print("|---|---:|---:|---:|")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="export-transposes-") as tmp:
        forms = {name: _exports(Path(tmp) / name, name == "2d") for name in ("2d", "3d")}
        for net in ("prepare", "clicks"):
            reqs = {k: core.compile_model(ov.convert_model(str(f[net])), "CPU", config).create_infer_request()
                    for k, f in forms.items()}  # fmt: skip
            inputs = {}
            for port in reqs["3d"].model_inputs:  # by the ONNX input name (a port may carry several names)
                name = next(n for n in INPUT_NAMES if n in port.get_names())
                inputs[name] = rng.normal(0, 0.3, list(port.get_shape())).astype(np.float32)
            if net == "clicks":
                inputs["labels"][:] = -1
                inputs["labels"][0, :2] = (1, 0)
                inputs["points"][:] = rng.uniform(0, 255, inputs["points"].shape)
                inputs["boxes"][:] = (40, 40, 160, 150)
            outs = {k: [np.array(v) for v in r.infer(inputs).values()] for k, r in reqs.items()}
            diff = max(float(np.abs(a - b).max()) for a, b in zip(outs["2d"], outs["3d"]))
            times: dict[str, list[float]] = {k: [] for k in reqs}
            for i in range(args.repeats):
                for k in ("2d", "3d") if i % 2 else ("3d", "2d"):
                    t0 = time.perf_counter()
                    reqs[k].infer(inputs)
                    times[k].append(time.perf_counter() - t0)
            before, after = median_ms(times["2d"]), median_ms(times["3d"])
            ratios.append(before / after)
            print(f"| {net} | {before:.1f} | {after:.1f} | {diff:.1e} |")
    print(f"speed-up of the batched form: prepare {ratios[0]:.2f}x, clicks {ratios[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
