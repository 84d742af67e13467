"""Command-line options and loading shared by the tools that run the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.backend import TorchBackend
from ..core.predictor import Predictor
from ..model.checkpoint import default_model_name, load_named_model
from ..model.registry import MODEL_REGISTRY


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=sorted(n for n in MODEL_REGISTRY if not n.endswith("_test")), default=None,
        help="network to run (default: the bundled student when present, else LiteMedSAM)",
    )
    parser.add_argument("--weights", type=Path, default=None, help="weights file for --model (our .pt format)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: all cores)")


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """Load the requested model (raises ModelNotAvailableError/InvalidCheckpointError with a clear message)."""
    name = args.model or default_model_name()
    model = load_named_model(name, args.weights)
    return Predictor(TorchBackend(model, name=name, threads=args.threads))
