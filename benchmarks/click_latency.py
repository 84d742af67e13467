"""Per-click latency through the code the app's worker runs: one more click on a box's mask, no re-encode.

The slice is encoded once and its box decoded (the box-only path); then each measured call is what the worker
does for a new click: ``ClickRefiner.refine`` (the click path's decode with every click so far and the previous
logits, the pixel refiner in its window around the mask and the clicks, then the mask upsampled to the 512x512
slice). Two objects, because the refiner's window grows with the object: an **organ** (the synthetic CT's liver,
about 180x170 px) and a **cell**-sized one (a 14x14 px box on the same slice). ``default`` is exactly the app's
click path (the shipped OpenVINO IRs); ``torch`` is the source install's fallback. All run in one process,
interleaved.

    .venv/bin/python benchmarks/click_latency.py [--threads 2] [--repeats 40]
"""

from __future__ import annotations

import argparse

import numpy as np

from medsam_desktop.core.backends.clicks import load_click_backend
from medsam_desktop.core.inference.clicks import ClickPoint, ClickRefiner, model_image
from medsam_desktop.core.inference.intensity import to_display_uint8
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.model_files import default_model_name, weights_for

try:
    from benchmarks._common import build_backend, machine_line, percentile_ms, timed
    from benchmarks.synthetic_ct import synthetic_ct
except ImportError:  # run as a script from benchmarks/
    from _common import build_backend, machine_line, percentile_ms, timed  # type: ignore[no-redef]
    from synthetic_ct import synthetic_ct  # type: ignore[no-redef]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40, help="clicks measured per click path")
    args = ap.parse_args(argv)
    vol, boxes3d = synthetic_ct(depth=8)
    image = to_display_uint8(vol, "CT", "soft tissue")[4]
    predictor = Predictor(build_backend("default", args.threads))
    weights = weights_for(default_model_name())
    refiners = {name: ClickRefiner(lambda r=runtime: load_click_backend(weights, args.threads, r))
                for name, runtime in (("default", "default"), ("torch", "torch"))}  # fmt: skip
    organ = np.asarray(boxes3d[0][[0, 1, 3, 4]], np.float64)
    cy, cx = (organ[1] + organ[3]) / 2, (organ[0] + organ[2]) / 2
    boxes = {"organ": organ, "cell": np.array([cx - 7, cy - 7, cx + 7, cy + 7])}
    emb = predictor.encode(image)
    starts = {obj: predictor.decode(emb, box).logits[0] for obj, box in boxes.items()}
    rng = np.random.default_rng(0)
    samples: dict[tuple[str, str], list[float]] = {(obj, k): [] for obj in boxes for k in refiners}
    images = {name: model_image(image) if r.needs_image else None for name, r in refiners.items()}  # once a slice
    for name, r in refiners.items():
        print(f"{name}: {r.backend.name}")
    for i in range(args.repeats + 3):
        n = 1 + i % 5  # 1..5 clicks so far, as in the protocol
        for obj, box in boxes.items():
            x = rng.uniform(box[0], box[2], n)
            y = rng.uniform(box[1], box[3], n)
            points = [ClickPoint(float(a), float(b), bool(k % 2 == 0)) for k, (a, b) in enumerate(zip(x, y))]
            for name, r in refiners.items():

                def click(r=r, box=box, points=points, start=starts[obj], im=images[name]) -> object:
                    return r.refine(emb, box, points, start, im)

                seconds = timed(click)
                if i >= 3:
                    samples[obj, name].append(seconds)
    print(machine_line(args.threads))
    print("| object | click path | p50 ms | p95 ms |")
    print("|---|---|---:|---:|")
    for (obj, name), values in samples.items():
        print(f"| {obj} | {name} ({refiners[name].backend.name}) | {percentile_ms(values, 50):.1f} | "
              f"{percentile_ms(values, 95):.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
