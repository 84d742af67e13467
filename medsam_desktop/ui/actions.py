"""The window's actions, menus and toolbar, declared in tables (as napari declares its actions).

:data:`ACTIONS`: one row per action: the window attribute it is stored in, its text, the window method it
triggers, its shortcuts and icon. :data:`TOOLS` and the orientations make checkable groups. :data:`MENUS` and
:data:`TOOLBAR` place them (``None``: a separator; ``@name``: a submenu filled by the window). The F1 list of
shortcuts is read from the actions themselves, so it cannot drift from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PyQt6.QtGui import QAction, QActionGroup, QIcon, QKeySequence
from PyQt6.QtWidgets import QDockWidget

from ..core.inference.intensity import CT_WINDOWS
from .slice_view import ORIENTATIONS, Tool

if TYPE_CHECKING:
    from .main_window import MainWindow

Shortcut = str | QKeySequence.StandardKey


@dataclass(frozen=True)
class ActionSpec:
    attr: str  # the MainWindow attribute holding the QAction (``act_open``)
    text: str
    slot: str  # the MainWindow method it triggers (``part.method``: a method of one of its parts)
    shortcuts: tuple[Shortcut, ...] = ()
    icon: str | None = None  # a qtawesome name
    checked: bool | None = None  # a toggle (its slot gets the new state), checked at start or not; None: no toggle


_K = QKeySequence.StandardKey
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("act_open", "&Open…", "file_actions.open_dialog", (_K.Open,), "fa5s.folder-open"),
    ActionSpec("act_open_dicom", "Open &DICOM folder…", "file_actions.open_dicom_dialog"),
    ActionSpec("act_open_mask", "Open &mask onto image…", "file_actions.open_mask_dialog"),
    ActionSpec("act_save", "&Save labels…", "file_actions.save_dialog", (_K.Save,), "fa5s.save"),
    ActionSpec("act_quit", "&Quit", "close", ("Ctrl+Q",)),
    ActionSpec("act_undo", "&Undo", "undo", ("Ctrl+Z",), "fa5s.undo"),
    ActionSpec("act_redo", "&Redo", "redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "fa5s.redo"),
    ActionSpec("act_new_label", "&New label", "new_label", ("N",)),
    ActionSpec("act_fill", "&Fill holes (slice)", "fill_holes"),
    ActionSpec("act_clear_slice", "&Clear slice", "clear_slice"),
    ActionSpec("act_clear_label", "Clear &label (all slices)", "clear_label"),
    ActionSpec("act_settings", "Se&ttings…", "settings_dialog"),
    ActionSpec("act_propagate", "&Propagate box through slices…", "propagate_dialog", ("Ctrl+P",), "fa5s.layer-group"),
    ActionSpec("act_segment_box", "&Segment the shown box", "segment_last_box", ("Return", "Enter")),
    ActionSpec("act_cancel", "&Cancel propagation", "cancel_propagation", ("Esc",)),
    ActionSpec("act_shortcuts", "&Keyboard shortcuts", "show_shortcuts", ("F1",)),
    ActionSpec("act_reset_zoom", "&Reset zoom", "reset_zoom", ("0",)),
    ActionSpec("act_maximise", "&Maximise view / three views", "toggle_maximise", ("M",), "fa5s.expand"),
    ActionSpec("act_link_zoom", "&Link zoom across views", "set_link_zoom", checked=False),
    ActionSpec("act_show_crosshair", "Show cross&hair", "set_show_crosshair", ("X",), checked=True),
    # slice keys act on the view whichever widget has the focus (3D Slicer, ITK-SNAP), a text field being edited
    # excepted (main_window._TextFieldKeys)
    ActionSpec("act_next_slice", "&Next slice", "next_slice", ("Up", "PgUp")),
    ActionSpec("act_previous_slice", "Pre&vious slice", "previous_slice", ("Down", "PgDown")),
    ActionSpec("act_brush_smaller", "Smaller brush", "brush_smaller", ("[",)),
    ActionSpec("act_brush_larger", "Larger brush", "brush_larger", ("]",)),
)
#: the editing tools: (tool, text, shortcut, icon); the first is checked at start
TOOLS: tuple[tuple[Tool, str, str, str], ...] = (
    (Tool.BOX, "&Box (segment)", "B", "fa5s.vector-square"),
    (Tool.BRUSH, "B&rush", "P", "fa5s.paint-brush"),
    (Tool.ERASER, "&Eraser", "E", "fa5s.eraser"),
    (Tool.PAN, "&Pan", "H", "fa5s.hand-paper"),
    (Tool.CROSSHAIR, "&Crosshair (links the views)", "C", "fa5s.crosshairs"),
)
#: menu title -> entries: an action attribute, ``None`` (separator), ``@samples`` / ``@recent`` / ``@window``
#: (submenus), ``@tools`` / ``@orientations`` (the checkable groups) or ``@docks`` (the docks' toggles)
MENUS: dict[str, tuple[str | None, ...]] = {
    "&File": ("act_open", "act_open_dicom", "@samples", "@recent", None, "act_open_mask", "act_save", None,
              "act_quit"),
    "&Edit": ("act_undo", "act_redo", None, "act_new_label", "act_fill", "act_clear_slice", "act_clear_label", None,
              "act_settings"),
    "&View": ("@orientations", "act_maximise", "act_next_slice", "act_previous_slice", None, "act_show_crosshair",
              "act_link_zoom", "@window", "act_reset_zoom", "@docks"),
    "&Tools": ("@tools", "act_brush_smaller", "act_brush_larger"),
    "&Segment": ("act_segment_box", "act_propagate", "act_cancel"),
    "&Help": ("act_shortcuts",),
}  # fmt: skip
TOOLBAR: tuple[str | None, ...] = ("act_open", "act_save", None, "act_undo", "act_redo", None, "@tools", None,
                                   "act_propagate")  # fmt: skip


def icon(name: str) -> QIcon:
    """A qtawesome icon, or an empty one (icons are decoration only)."""
    try:
        import qtawesome as qta

        return qta.icon(name)
    except Exception:
        return QIcon()


def _make(window: MainWindow, text: str, slot: Callable[..., object], shortcuts: tuple[Shortcut, ...],
          icon_name: str | None, checked: bool | None = None) -> QAction:  # fmt: skip
    action = QAction(text, window)
    if checked is not None:
        action.setCheckable(True)
        action.setChecked(checked)
    keys = [QKeySequence(s) for s in shortcuts]
    if keys:
        action.setShortcuts(keys)
    if icon_name:
        action.setIcon(icon(icon_name))
    action.triggered.connect(slot)  # type: ignore[arg-type]
    window.addAction(action)
    return action


def build_actions(window: MainWindow) -> None:
    """Create every action of :data:`ACTIONS` as ``window.<attr>``, then the tool and orientation groups
    (``window.tool_actions``, ``window.orientation_actions``)."""
    for spec in ACTIONS:
        slot = _resolve(window, spec.slot)
        setattr(window, spec.attr, _make(window, spec.text, slot, spec.shortcuts, spec.icon, spec.checked))
    window.tool_group = QActionGroup(window)
    window.tool_actions = {}
    for tool, text, key, icon_name in TOOLS:
        act = _make(window, text, lambda _=False, t=tool: window.set_tool(t), (key,), icon_name)
        act.setCheckable(True)
        window.tool_group.addAction(act)
        window.tool_actions[tool] = act
    window.tool_actions[TOOLS[0][0]].setChecked(True)
    window.orientation_group = QActionGroup(window)
    window.orientation_actions = {}
    for i, name in enumerate(ORIENTATIONS, start=1):
        act = _make(window, name.capitalize(), lambda _=False, o=name: window.set_orientation(o), (str(i),), None)
        act.setCheckable(True)
        window.orientation_group.addAction(act)
        window.orientation_actions[name] = act
    window.orientation_actions[ORIENTATIONS[0]].setChecked(True)


def _resolve(window: MainWindow, slot: str) -> Callable[..., object]:
    """``"undo"`` -> ``window.undo``; ``"file_actions.save_dialog"`` -> ``window.file_actions.save_dialog``."""
    target: object = window
    for name in slot.split("."):
        target = getattr(target, name)
    assert callable(target), slot
    return target


def _group(window: MainWindow, name: str) -> list[QAction]:
    return list({"@tools": window.tool_actions, "@orientations": window.orientation_actions}[name].values())


def build_menus(window: MainWindow, *docks: QDockWidget) -> None:
    """The menu bar from :data:`MENUS` and the toolbar from :data:`TOOLBAR`."""
    bar = window.menuBar()
    assert bar is not None
    for title, entries in MENUS.items():
        menu = bar.addMenu(title)
        assert menu is not None
        for entry in entries:
            if entry is None:
                menu.addSeparator()
            elif entry in ("@tools", "@orientations"):
                for act in _group(window, entry):
                    menu.addAction(act)
            elif entry == "@samples":
                window.samples_menu = menu.addMenu("Open &sample")
                window.samples_menu.aboutToShow.connect(window.file_actions.fill_samples_menu)
            elif entry == "@recent":
                window.recent_menu = menu.addMenu("&Recent files")
                window.recent_menu.aboutToShow.connect(window.file_actions.fill_recent_menu)
            elif entry == "@window":
                window.window_menu = menu.addMenu("&Window/level")
                for name, (level, width) in CT_WINDOWS.items():
                    window.window_menu.addAction(
                        f"CT {name}",
                        lambda _=False, lv=level, w=width: window.view.set_window(lv, w),  # linked
                    )
                window.window_menu.addAction("Auto (0.5–99.5 %)", window.auto_window)
            elif entry == "@docks":
                for dock in docks:
                    menu.addAction(dock.toggleViewAction())
            else:
                menu.addAction(getattr(window, entry))
    toolbar = window.addToolBar("Main")
    assert toolbar is not None
    toolbar.setObjectName("main_toolbar")
    for entry in TOOLBAR:
        if entry is None:
            toolbar.addSeparator()
        elif entry.startswith("@"):
            for act in _group(window, entry):
                toolbar.addAction(act)
        else:
            toolbar.addAction(getattr(window, entry))


def shortcut_rows(window: MainWindow) -> list[tuple[str, str]]:
    """(keys, action) for every action with a keyboard shortcut, in creation order (the F1 list)."""
    rows = []
    for act in window.actions():
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts()]
        if keys:
            rows.append((" / ".join(keys), act.text().replace("&", "").rstrip("…")))
    return rows
