"""Entry point: ``medsam-desktop [PATH]`` (or ``python -m medsam_desktop``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..text import exception_line

log = logging.getLogger(__name__)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medsam-desktop", description="Box-prompted segmentation of CT/MR images.")
    parser.add_argument("path", nargs="?", help="image file or DICOM folder to open")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="store_true", help="print the app and model versions and exit")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="headless check: load the bundled model, segment a sample, print timings, exit",
    )
    # hidden, for scripts/check_bundle.py: the app's segment-and-save path on PATH, without a window
    parser.add_argument("--segment-and-export", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help=argparse.SUPPRESS)
    parser.add_argument("--slice", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(list(argv) if argv is not None else None)


def _headless(args: argparse.Namespace) -> int | None:
    """``--version``, ``--self-test`` and ``--segment-and-export``: one line out, an exit code; else None."""
    if not (args.version or args.self_test or args.segment_and_export):
        return None
    from . import selftest

    selftest.use_offscreen_qt()  # before PyQt6 is imported
    if args.version:
        from ..cli.version import version_line

        print(version_line())
        return 0
    if args.self_test:
        try:
            print(selftest.run_self_test().line())
        except selftest.SelfTestError as exc:
            print(exc)
            return 1
        except Exception as exc:  # anything else is still one line (traceback with --verbose)
            log.debug("self-test crashed", exc_info=True)
            print(f"self-test FAILED: {exception_line(exc, with_type=True)}")
            return 1
        return 0
    if not args.path or args.box is None:
        print("--segment-and-export needs PATH and --box X0 Y0 X1 Y1")
        return 2
    try:
        from ..cli.segment_export import segment_and_export

        n = segment_and_export(Path(args.path), args.box, args.slice, args.segment_and_export)
    except Exception as exc:
        log.debug("segment-and-export failed", exc_info=True)
        print(f"segment-and-export FAILED: {exception_line(exc, with_type=True)}")
        return 1
    print(f"segment-and-export OK: {n} voxels -> {args.segment_and_export}")
    return 0


def _install_excepthook() -> None:
    """An unexpected error in a Qt slot is logged and shown as one line, instead of aborting the app."""
    from PyQt6.QtWidgets import QApplication

    from . import dialogs

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.error("unexpected error", exc_info=(exc_type, exc, tb))
        if QApplication.instance() is not None:
            dialogs.show_error(None, "Unexpected error", "Something went wrong and the last action may not have "
                               "finished. Save your labels; if it happens again, restart MedSAM Desktop and report "
                               "it.")  # fmt: skip

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Start the application; returns the exit code."""
    args = _parse(argv)
    headless = args.version or args.self_test or args.segment_and_export is not None
    level = logging.DEBUG if args.verbose else logging.WARNING if headless else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = _headless(args)
    if code is not None:
        return code
    from .platform_check import display_problem

    problem = display_problem()
    if problem:  # Qt would abort with several lines about plugins
        print(f"medsam-desktop: {problem}", file=sys.stderr)
        return 1
    from PyQt6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings_dialog import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    _install_excepthook()
    window = MainWindow()
    window.show()
    restoring = window.check_autosave()
    if args.path and not restoring:
        window.open_path(args.path)
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
