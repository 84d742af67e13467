"""``python -m medsam_desktop [PATH]`` starts the desktop app."""

import sys

from medsam_desktop.ui.app import main

sys.exit(main())
