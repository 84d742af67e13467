"""Before Qt starts: Qt's X11 plugin's missing system libraries are named in one line with the apt-get command."""

from __future__ import annotations

import sys

import pytest

from medsam_desktop.ui import platform_check

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")


def test_missing_libraries_give_one_line_with_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_check, "missing_libraries", lambda plugin: ["libxcb-cursor.so.0", "libfoo.so.9"])
    line = platform_check.display_problem({"DISPLAY": ":0"})
    assert line is not None and "\n" not in line
    assert "libxcb-cursor.so.0" in line and "sudo apt-get install -y libfoo.so.9 libxcb-cursor0" in line


def test_no_display_and_other_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_check, "missing_libraries", lambda plugin: [])
    assert "DISPLAY is not set" in (platform_check.display_problem({}) or "")
    assert platform_check.display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None  # chosen on purpose
    assert platform_check.display_problem({"DISPLAY": ":0"}) is None  # everything there


def test_the_installed_plugin_is_found_and_checked() -> None:
    plugin = platform_check.xcb_plugin()
    assert plugin is not None and plugin.name == "libqxcb.so"
    assert platform_check.apt_packages(["libxcb-icccm.so.4", "libxcb-icccm.so.4"]) == ["libxcb-icccm4"]


def test_missing_packages_prints_nothing_when_complete(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(platform_check, "missing_libraries", lambda plugin: [])
    assert platform_check.main(["--missing-packages"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(platform_check, "missing_libraries", lambda plugin: ["libxcb-keysyms.so.1"])
    platform_check.main(["--missing-packages"])
    assert capsys.readouterr().out.strip() == "libxcb-keysyms1"
