"""Which CPU class this is, for the default precision: int8 only where the CPU has VNNI (int8 dot products).

Without VNNI, int8 convolutions run on AVX2's ``vpmaddubsw``, whose 16-bit intermediate sums saturate: on the dev
set OpenVINO int8 then fell 3.3 DSC points below fp32 on MR (docs/performance.md, "Default"), so those CPUs run
fp32. The class comes from an ``ONEDNN_MAX_CPU_ISA`` cap when one is set (the benchmarks emulate laptops with it),
else from the CPU's flags (``/proc/cpuinfo`` on Linux; numpy's CPU feature table elsewhere, which knows
AVX512-VNNI but not AVX-VNNI: such a CPU outside Linux runs fp32, slower but within the gate). No torch here.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

#: "avx512_vnni" (AVX-512 with VNNI or AMX), "avx2_vnni" (recent laptops), "avx512" / "avx2" (no VNNI), "other"
CPU_CLASSES = ("avx512_vnni", "avx2_vnni", "avx512", "avx2", "other")
#: classes whose int8 kernels use VNNI: there OpenVINO int8 is within the quality gate
VNNI_CLASSES = ("avx512_vnni", "avx2_vnni")


def class_of_cap(cap: str) -> str | None:
    """The class a oneDNN ISA cap emulates (``AVX2_VNNI`` -> ``avx2_vnni``), None for no cap or an unknown one."""
    cap = cap.upper()
    if not cap or cap in ("ALL", "DEFAULT"):
        return None
    if cap.startswith(("AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10")):
        return "avx512_vnni"
    if cap.startswith("AVX2_VNNI"):
        return "avx2_vnni"
    if cap.startswith("AVX512"):
        return "avx512"
    if cap == "AVX2":
        return "avx2"
    if cap in ("SSE41", "AVX"):
        return "other"
    return None


def _flags() -> set[str]:
    """The CPU's feature flags, lower case (``avx2``, ``avx_vnni``, ``avx512_vnni``, ``amx_int8``, ...)."""
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
        except OSError:
            pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore[no-redef]
    names = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni"}
    return {flag for key, flag in names.items() if features.get(key)}


@functools.cache
def cpu_class() -> str:
    """One of :data:`CPU_CLASSES` for this process (the cap first, then the CPU)."""
    capped = class_of_cap(os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    if capped is not None:
        return capped
    flags = _flags()
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    if "avx512f" in flags:
        return "avx512_vnni" if vnni else "avx512"
    if "avx2" in flags:
        return "avx2_vnni" if vnni else "avx2"
    return "other"
