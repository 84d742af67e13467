"""Shared pieces of the benchmark scripts: the configurations compared, the machine line, medians, peak RSS.

A configuration is a model name from the registry, a precision and a runtime: ``teacher`` is LiteMedSAM as
shipped (torch, fp32), ``student`` the bundled RepViT-M0.6 (torch, fp32), ``-bf16`` the same weights in bf16,
``-openvino`` the same network exported to OpenVINO,
``-openvino-int8`` that with the shipped int8 encoder (``core.backends.shipped``), and ``default`` exactly what the
app runs on this CPU (``load_backend``'s default: OpenVINO int8 on the shipped files). Every configuration is built
by :func:`~medsam_desktop.core.backends.load_backend`, i.e. the code path of the app and the CLIs. The instruction
set can be capped to a laptop's with ``--isa avx2_vnni|avx2`` (benchmarks that run children) or the environment
(:data:`ISA_CAPS`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsam_desktop.core.backends import InferenceBackend, describe, load_backend
from medsam_desktop.model_files import default_model_name

#: environment that caps oneDNN (torch and OpenVINO) and ATen to what laptops have; ``native`` leaves it alone
ISA_CAPS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2_vnni": {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}

CONFIGS: dict[str, tuple[str, str, str]] = {  # label -> (model name or "student", precision, runtime)
    "teacher": ("litemedsam", "fp32", "torch"),
    "teacher-bf16": ("litemedsam", "bf16", "torch"),
    "student": ("student", "fp32", "torch"),
    "student-bf16": ("student", "bf16", "torch"),
    "student-openvino": ("student", "fp32", "openvino"),
    "student-openvino-bf16": ("student", "bf16", "openvino"),
    # the shipped int8 encoder (training/quantize_encoder.py); decoder and the rest at auto precision
    "student-openvino-int8": ("student", "int8", "openvino"),
    # what the app runs here (load_backend's defaults)
    "default": ("student", "default", "default"),
}


def native_bf16_available() -> bool:
    """torch's probe (benchmarks run from a source install, with torch)."""
    from medsam_desktop.core.backends.torch_backend import native_bf16_available as probe

    return probe()


def isa_label() -> str:
    """``native``, ``avx2_vnni`` or ``avx2``: the cap this process runs under (from the environment)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower()
    return cap if cap in ISA_CAPS else "native"


def describe_config(label: str, backend: InferenceBackend) -> str:
    """``default = OpenVINO int8 (bf16 elsewhere)``: what a configuration really ran."""
    return f"{label} = {describe(backend)}"


def build_backend(label: str, threads: int) -> InferenceBackend:
    """The backend of one configuration (``student`` resolves to the bundled student's registry name)."""
    name, precision, runtime = CONFIGS[label]
    if name == "student":
        name = default_model_name()
        if name == "litemedsam":
            raise SystemExit("no bundled student in models/: nothing to compare with the teacher")
    backend = load_backend(name, threads=threads, precision=precision, runtime=runtime)
    if getattr(backend, "fallback_reason", None):
        raise SystemExit(f"{label}: {backend.fallback_reason}")
    return backend


def parse_configs(spec: str) -> list[str]:
    labels = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in labels if s not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    if any(CONFIGS[s][1] == "bf16" for s in labels) and not native_bf16_available():
        print("note: this CPU has no native bf16; the bf16 rows measure emulated bf16")
    return labels


def machine_line(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import importlib.metadata

    versions = []
    for dist in ("torch", "openvino"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    caps = ISA_CAPS[isa_label()]
    isa = f"ISA capped to {caps['ONEDNN_MAX_CPU_ISA']} (emulated laptop class)" if caps else "native ISA"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {', '.join(versions)}, threads {threads}, {isa}, "
        f"native bf16 {native_bf16_available() if not caps else False}"
    )


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def percentile_ms(values: list[float], q: float) -> float:
    s = sorted(values)
    return 1e3 * s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process since start or :func:`reset_peak_rss` (VmHWM where available)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # never reset; Linux kB, macOS bytes
        return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` boxes (n, 4) float32 in the 256 model frame: corners in [0, 150), sides 20-100 px."""
    lo = rng.uniform(0, 150, (n, 2))
    return np.hstack([lo, lo + rng.uniform(20, 100, (n, 2))]).astype(np.float32)


def run_child(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``script --child ARGS`` in a fresh interpreter (own peak RSS, own malloc settings) and return the JSON
    object it prints last; a failing child stops the benchmark with its error output."""
    out = subprocess.run(
        [sys.executable, str(Path(script).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if out.returncode != 0:
        raise SystemExit(f"{Path(script).name} --child {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
