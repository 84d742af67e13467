"""Process-wide tuning of glibc's malloc for model inference (Linux; a no-op elsewhere).

A decode call allocates and frees tensors of a few to ~30 MB in a tight loop. With glibc's defaults each
such block is either mapped afresh (``mmap``, then every page faulted in and zeroed) or returned to the
system when it reaches the top of the heap (``trim``), and re-faulted on the next call. Measured on this
project's 2-core CPU (docs/performance.md, A/B with ``MEDSAM_MALLOC_TUNING=0``): decoder per box of 8 24.1 ->
19.5 ms fp32 and 17.4 -> 13.8 ms bf16; encoder 134 -> 124 ms fp32, 86 -> 75 ms bf16 (LiteMedSAM's 925 -> 752
ms); RSS over a long session settles (benchmarks/memory_endurance.py). Blocks under 32 MB now stay in the
heap, and up to ``TRIM_THRESHOLD`` bytes of free heap top are kept for reuse; larger arrays (whole
volumes) are still mapped and go back to the system when freed. ``MEDSAM_MALLOC_TUNING=0`` in the
environment leaves malloc alone (the benchmarks use it to measure the difference).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's ceiling for the mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024

_tuned: bool | None = None


def tune_malloc_for_inference() -> bool:
    """Apply the thresholds once per process; True when glibc accepted them."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux") or os.environ.get("MEDSAM_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        log.debug("no glibc mallopt: malloc keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc malloc thresholds %s", "set" if ok else "rejected")
    _tuned = ok
    return ok
