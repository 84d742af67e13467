"""Command-line options and loading shared by the tools that run the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.backend import DEFAULT_PRECISION, DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, load_backend
from ..core.predictor import Predictor
from ..model.checkpoint import default_model_name
from ..model.registry import MODEL_REGISTRY


def _threads(text: str) -> int:
    """``--threads`` value: a whole number >= 0 (0: all cores); argparse turns the error into one usage line."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all cores) or more, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=sorted(n for n in MODEL_REGISTRY if not n.endswith("_test")), default=None,
        help="network to run (default: the bundled student when present, else LiteMedSAM)",
    )
    parser.add_argument("--weights", type=Path, default=None, help="weights file for --model (our .pt format)")
    parser.add_argument("--threads", type=_threads, default=None,
                        help="CPU threads for the model (default or 0: all cores)")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
        help=f"inference runtime (default: {DEFAULT_RUNTIME}); openvino/onnxruntime export the model to ONNX once "
        "into the user cache folder and fall back to torch with a warning when unavailable",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
        help=f"compute precision (default: {DEFAULT_PRECISION}); auto = bf16 where the CPU has native bf16; "
        "onnxruntime runs fp32 only; int8 = the shipped int8 image encoder on openvino (others run auto)",
    )


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """Load the requested model (raises ModelNotAvailableError/InvalidCheckpointError with a clear message)."""
    name = args.model or default_model_name()
    backend = load_backend(
        name, args.weights, threads=args.threads,
        precision=getattr(args, "precision", DEFAULT_PRECISION), runtime=getattr(args, "runtime", DEFAULT_RUNTIME),
    )
    return Predictor(backend)
