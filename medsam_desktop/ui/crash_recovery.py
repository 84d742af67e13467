"""Crash safety of the window: unsaved labels are snapshotted in the background while the user edits (throttled,
one write at a time), and labels left by a session that crashed are offered back at the next start.

The Qt-free parts (snapshots, orphan detection by OS lock, fingerprints) are :mod:`medsam_desktop.core.document
.autosave`; this module only wires them to the window's session, a timer and the restore dialog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PyQt6.QtCore import QObject, QTimer

from ..core.document import autosave
from ..core.document.annotation import AnnotationSession, LabelTable
from . import dialogs

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)

#: at most one snapshot per interval, written after the last edit
AUTOSAVE_INTERVAL_MS = 500


class CrashRecovery(QObject):
    """Autosave of ``window.session`` and the restore offer at start."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self.autosaver = autosave.Autosaver()
        self._shadow = autosave.ShadowLabels()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self._timer.timeout.connect(self._save)

    def schedule(self, *_args: object) -> None:
        """A snapshot soon (the timer throttles bursts of edits)."""
        if not self._timer.isActive():
            self._timer.start()

    def attach(self, session: AnnotationSession, previous: AnnotationSession | None) -> None:
        """Follow ``session``'s edits (and stop following ``previous``)."""
        if previous is not None:
            previous.table_changed.disconnect(self.schedule)
            previous.active_changed.disconnect(self.schedule)
            previous.labels_changed.disconnect(self._shadow.mark)
        self._shadow.reset(session.labels)
        session.labels_changed.connect(self._shadow.mark)
        session.table_changed.connect(self.schedule)
        session.active_changed.connect(self.schedule)
        self.schedule()

    def _save(self) -> None:
        """Snapshot the session for crash recovery (written on a background thread; nothing when saved)."""
        session = self._window.session
        if session is None or session.volume.source_path is None or not session.dirty:
            self.autosaver.clear()
        elif self.autosaver.busy:
            self._timer.start()  # one write at a time: copy the labels again when it is done
        else:
            self.autosaver.save(autosave.Snapshot.of(session, self._shadow.update(session.labels)))

    def offer_restore(self) -> bool:
        """Offer to restore labels left by a session that crashed; True when a restore was started."""
        window = self._window
        for path in autosave.find_orphans():
            try:
                snap = autosave.read_snapshot(path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("dropping unreadable autosave %s: %s", path, exc)
                autosave.discard(path)
                continue
            src = Path(snap.source)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(snap.saved_at))
            answer = dialogs.ask_restore(window, src.name, when)
            if answer == "discard":
                autosave.discard(path)
            if answer != "restore":
                return False
            if not src.exists():
                dialogs.show_error(window, "Cannot restore", f"The image {src} no longer exists; the labels were "
                                   f"kept in {path.parent} (move the image back and restart).")  # fmt: skip
                return False
            return window.open_path(src, then=lambda s=snap, p=path: self._restore(s, p))
        return False

    def _restore(self, snap: autosave.Snapshot, path: Path) -> None:
        window = self._window
        assert window.session is not None
        if not autosave.same_image(snap.fingerprint, window.session.volume):
            dialogs.show_error(window, "Cannot restore", f"{Path(snap.source).name} changed since the labels were "
                               f"autosaved; they were kept in {path.parent}.")  # fmt: skip
            return
        window.session.restore_state(snap.labels, LabelTable.from_json(snap.table_json), snap.active_label)
        autosave.discard(path)
        window.status("Restored the unsaved labels (Ctrl+Z undoes)", 8000)

    def close(self) -> None:
        self._timer.stop()
        self.autosaver.close()
