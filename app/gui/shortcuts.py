"""The keyboard shortcut sheet (``?`` or F1): every menu action and its keys, then the mouse gestures.

Research software, NOT for diagnostic use.  The rows are read from the window's actions themselves,
so the sheet cannot drift from the keys.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QMenuBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

__all__ = ["MOUSE_GESTURES", "shortcut_rows", "ShortcutSheet"]

#: what the mouse does (the keys are listed from the window's actions themselves)
MOUSE_GESTURES = [
    ("left click / drag", "move the crosshair (the other views follow)"),
    ("right drag", "window width (horizontal) and level (vertical)"),
    ("wheel", "previous / next slice of the view under the mouse"),
    ("Ctrl+wheel", "zoom"), ("middle drag, Shift+left drag", "pan"),
    ("double click / Enter in the worklist", "open the case with its saved result and review"),
    ("drop a folder or file on the window", "open a DICOM folder, NIfTI file, result.json or audit folder"),
]


def shortcut_rows(menu_bar: QMenuBar) -> list[tuple[str, str, str]]:
    """(menu, action, shortcut(s)) of every action of ``menu_bar``'s menus; then the mouse
    gestures (menu 'Mouse')."""
    rows = []
    for menu_action in menu_bar.actions():
        menu = menu_action.menu()
        if menu is None:
            continue
        title = menu_action.text().replace("&", "")
        for a in menu.actions():  # type: ignore[attr-defined]
            if a.isSeparator() or not a.text():
                continue
            keys = " or ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts())
            rows.append((title, a.text().replace("&", ""), keys))
    rows += [("Mouse", what, how) for how, what in MOUSE_GESTURES]
    return rows


class ShortcutSheet(QDialog):
    """A table of ``rows`` (menu, action, keys) with a Close button; ``table`` is the table."""

    def __init__(self, rows: list[tuple[str, str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LungFuse keyboard shortcuts")
        lay = QVBoxLayout(self)
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(["menu", "action", "keys"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        lay.addWidget(buttons)
        self.resize(640, 720)
