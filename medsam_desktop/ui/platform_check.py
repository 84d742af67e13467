"""Before Qt starts on Linux: can its X11 (xcb) plugin load? If not, say in one line what is missing.

Qt's xcb plugin links a dozen system libraries (``libxcb-cursor0``, ``libxcb-icccm4``, ``libxcb-keysyms1``, ...)
that a fresh Debian/Ubuntu desktop may lack; Qt then aborts with several lines about plugins. This module finds
the missing libraries without starting Qt (``ldd``, else ``dlopen``), maps them to Debian package names and gives
the one command to run. ``python -m medsam_desktop.ui.platform_check --missing-packages`` prints those package
names (``scripts/setup.sh`` installs them). No Qt is imported here.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: shared library -> Debian/Ubuntu package (the libraries Qt 6's xcb plugin and libQt6XcbQpa link)
DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-sync.so.1": "libxcb-sync1", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-util.so.1": "libxcb-util1", "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6", "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
}  # fmt: skip
_MISSING_RE = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_DLOPEN_RE = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")


def xcb_plugin() -> Path | None:
    """Qt's xcb plugin: in the bundle (``sys._MEIPASS``) or in the installed PyQt6, without importing PyQt6."""
    roots = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        roots.append(Path(bundle) / "PyQt6")
    spec = importlib.util.find_spec("PyQt6")
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    for root in roots:
        plugin = root / "Qt6" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def missing_libraries(plugin: Path) -> list[str]:
    """The shared libraries the plugin (and libQt6XcbQpa beside Qt's libs) cannot find, ``[]`` when it loads."""
    qpa = plugin.parents[2] / "lib" / "libQt6XcbQpa.so.6"
    if shutil.which("ldd"):
        found: list[str] = []
        for lib in (plugin, qpa):
            if lib.is_file():
                out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=False).stdout
                found += [m for m in dict.fromkeys(_MISSING_RE.findall(out)) if m not in found]
        return found
    try:  # no ldd: dlopen names the first missing library only
        ctypes.CDLL(str(plugin), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        match = _DLOPEN_RE.search(str(exc))
        return [match.group(1)] if match else [str(exc)]
    return []


def apt_packages(libraries: list[str]) -> list[str]:
    """Debian package names for ``libraries`` (a library not in the table is named as it is)."""
    return sorted({DEBIAN_PACKAGES.get(lib, lib) for lib in libraries})


def display_problem(environ: dict[str, str] | None = None) -> str | None:
    """One line saying why Qt's window cannot start here (Linux, xcb platform), or None when it can."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # offscreen, wayland, ... chosen on purpose: Qt says itself if that fails
    if not env.get("DISPLAY"):
        return ("no X11 display (DISPLAY is not set): start MedSAM Desktop from a desktop session; "
                "--self-test and --version run without one")  # fmt: skip
    plugin = xcb_plugin()
    if plugin is None:
        return None  # a Qt without the plugin file here (not a Linux wheel): let Qt decide
    missing = missing_libraries(plugin)
    if not missing:
        return None
    return (f"Qt's X11 plugin cannot load: {', '.join(missing)} missing; install with: "
            f"sudo apt-get install -y {' '.join(apt_packages(missing))}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--missing-packages", action="store_true",
                    help="print the Debian packages Qt's xcb plugin still needs (nothing when none)")  # fmt: skip
    args = ap.parse_args(argv)
    plugin = xcb_plugin()
    missing = missing_libraries(plugin) if plugin is not None and sys.platform.startswith("linux") else []
    if args.missing_packages:
        if missing:
            print(" ".join(apt_packages(missing)))
        return 0
    problem = display_problem()
    print(problem or "Qt's X11 plugin can load")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
