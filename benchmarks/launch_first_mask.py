"""Launch -> first mask, cold and warm: the app's ``--self-test`` as a fresh process, with an empty OpenVINO model
cache (cold: it compiles) and then with the cache it filled (warm: it loads the compiled blobs).

Each run is a new process (the bundle's executable with ``--app``, else ``python -m medsam_desktop``) that shows the
main window offscreen, loads the default model and segments the CT sample. Reported per run: wall seconds from
process start to exit, and the self-test's own figures (window shown, model load, first mask).

    .venv/bin/python benchmarks/launch_first_mask.py [--app dist/MedSAM-Desktop/MedSAM-Desktop] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE_RE = re.compile(r"window ([\d.]+) s after start, model load ([\d.]+) s, first mask (\d+) ms")


def run_once(cmd: list[str], cache: Path) -> tuple[float, float, float, float, str]:
    """(wall s, window s, model load s, first mask s, runtime) of one self-test process."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "MEDSAM_CACHE_DIR": str(cache)}
    t = time.perf_counter()
    proc = subprocess.run([*cmd, "--self-test"], capture_output=True, text=True, env=env, timeout=600, check=False)
    wall = time.perf_counter() - t
    out = proc.stdout.strip().splitlines()
    line = out[-1] if out else proc.stderr.strip()[-300:]
    match = LINE_RE.search(line)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"self-test failed: {line}")
    runtime = line.split(":", 1)[1].split(";", 1)[0].strip()
    return wall, float(match.group(1)), float(match.group(2)), float(match.group(3)) / 1e3, runtime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", type=Path, default=None, help="the bundle's executable (default: this checkout)")
    ap.add_argument("--repeats", type=int, default=3, help="cold and warm runs each (medians)")
    args = ap.parse_args(argv)
    cmd = [str(args.app)] if args.app else [sys.executable, "-m", "medsam_desktop"]
    rows: dict[str, list[tuple[float, float, float, float, str]]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="launch-cache-") as tmp:
            rows["cold"].append(run_once(cmd, Path(tmp)))  # empty model cache: OpenVINO compiles
            rows["warm"].append(run_once(cmd, Path(tmp)))  # the cache the cold run filled
    print(f"{'bundle ' + str(args.app) if args.app else 'source checkout'}; {args.repeats} runs each (medians)")
    print(f"{'launch':<8}{'wall s':>9}{'window s':>10}{'load s':>9}{'first mask ms':>15}  runtime")
    for kind, runs in rows.items():
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        print(f"{kind:<8}{med[0]:>9.2f}{med[1]:>10.2f}{med[2]:>9.2f}{med[3] * 1e3:>15.0f}  {runs[0][4]}")
    cold, warm = (statistics.median(r[0] for r in rows[k]) for k in ("cold", "warm"))
    print(f"warm launch -> first mask (process wall time): {warm:.2f} s (cold {cold:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
