"""PyInstaller entry point of MedSAM Desktop (``build.spec``): the same ``main`` as ``medsam-desktop``."""

import sys

from medsam_desktop.ui.app import main

if __name__ == "__main__":
    sys.exit(main())
