"""Command-line options and loading shared by the tools that run the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.backends import DEFAULT, DEFAULT_PRECISION, DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, load_backend
from ..core.inference.predictor import Predictor
from ..model_files import USER_MODELS, default_model_name


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
        "--model",
        choices=USER_MODELS,
        default=None,
        help="network to run (default: the bundled student when present, else LiteMedSAM)",
    )
    parser.add_argument("--weights", type=Path, default=None, help="weights file for --model (our .pt format)")
    parser.add_argument(
        "--threads", type=_threads, default=None, help="CPU threads for the model (default or 0: all cores)"
    )
    parser.add_argument(
        "--runtime",
        choices=(DEFAULT, *RUNTIMES),
        default=DEFAULT_RUNTIME,
        help="inference runtime (default: openvino on the shipped files when the weights have them, else torch); "
        "openvino/onnxruntime on other weights export them to ONNX once into the user cache folder; an unusable "
        "runtime falls back with a warning",
    )
    parser.add_argument(
        "--precision",
        choices=(DEFAULT, *PRECISIONS),
        default=DEFAULT_PRECISION,
        help="compute precision (default: int8 on openvino, else auto); auto = bf16 where the CPU has native "
        "bf16; onnxruntime runs fp32 only; int8 = the shipped int8 image encoder on openvino (others run auto)",
    )


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """Load the requested model (raises ModelNotAvailableError/InvalidCheckpointError with a clear message)."""
    name = args.model or default_model_name()
    backend = load_backend(
        name,
        args.weights,
        threads=args.threads,
        precision=getattr(args, "precision", DEFAULT_PRECISION),
        runtime=getattr(args, "runtime", DEFAULT_RUNTIME),
    )
    return Predictor(backend)
