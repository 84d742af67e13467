"""Entry point: ``medsam-desktop [PATH]`` (or ``python -m medsam_desktop``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import TracebackType

log = logging.getLogger(__name__)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medsam-desktop", description="Box-prompted segmentation of CT/MR images.")
    parser.add_argument("path", nargs="?", help="image file or DICOM folder to open")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(list(argv) if argv is not None else None)


def _install_excepthook() -> None:
    """An unexpected error in a Qt slot is logged and shown as one line, instead of aborting the app."""
    from PyQt6.QtWidgets import QApplication

    from . import dialogs

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.error("unexpected error", exc_info=(exc_type, exc, tb))
        if QApplication.instance() is not None:
            dialogs.show_error(None, "Unexpected error", f"{exc_type.__name__}: {exc}")

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Start the application; returns the exit code."""
    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    from PyQt6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings_dialog import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    _install_excepthook()
    window = MainWindow()
    window.show()
    if args.path:
        window.open_path(args.path)
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
