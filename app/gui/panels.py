"""Side panels of the main window: the findings table and the overlay controls with their legend.

Research software, NOT for diagnostic use.

They show what a :class:`CaseResult` holds and nothing else: every number in the findings table
is a field of ``Finding`` (or the reader's review), formatted with its unit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFontMetrics, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lungfuse.app.gui.render import heat_lut
from lungfuse.app.gui.scene import BOX_RGB, HEATMAP_KINDS, MASK_RGB, READER_RGB, SELECTED_RGB

__all__ = ["FindingsTable", "OverlayPanel", "ColorBar", "COLUMNS"]

COLUMNS = ("id", "side / lobe", "long / short mm", "mean mm", "volume mm³", "texture", "malignancy",
           "Lung-RADS", "consistency", "review")


class _Item(QTableWidgetItem):
    """A cell that sorts by a number (``sort_key``) while showing formatted text."""

    def __init__(self, text: str, sort_key: float | str | None = None) -> None:
        super().__init__(text)
        self.sort_key = sort_key if sort_key is not None else text
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.sort_key, getattr(other, "sort_key", other.text())
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a < b
        return str(a) < str(b)


def _short_axis(f: Any) -> float | None:
    """The short axis (mm) from the measurement, when it was measured."""
    m = f.measurement or {}
    for key in ("short_axis_mm", "short_mm"):
        if isinstance(m.get(key), int | float):
            return float(m[key])
    return None


class FindingsTable(QTableWidget):
    """One row per finding (machine and reader's); selecting a row emits ``finding_selected(id)``."""

    finding_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # F1 first until the reader sorts otherwise
        self.verticalHeader().setVisible(False)
        self.setAlternatingRowColors(True)
        self.horizontalHeader().setStretchLastSection(True)
        self.itemSelectionChanged.connect(self._selection)
        self.setToolTip("click a row to move the three views to the finding; click a header to sort")

    def fill(self, result: Any, review: Any, ai_visible: bool = True) -> None:
        """Rows from ``result.findings`` (hidden in second-reader mode until the AI is shown) and
        the reader's added findings; the review column from ``review`` (a :class:`Review` or None)."""
        self.setSortingEnabled(False)
        self.blockSignals(True)
        self.setRowCount(0)
        threshold = None
        if result is not None:
            threshold = (result.models.get("fusion", {}).get("decision_thresholds", {}) or {}).get("afa_eaf")
        rows: list[list[_Item]] = []
        for f in (result.findings if result is not None and ai_visible else []):
            fr = review.for_finding(f) if review is not None else None
            short = _short_axis(f)
            p = f.malignancy_probability
            op = "" if p is None or threshold is None else (" ≥ op." if p >= threshold else " < op.")
            lr = (fr.category + " (reader)") if fr is not None and fr.category else (f.lung_rads or "—")
            state = (fr.decision if fr is not None and fr.decision else "pending")
            if fr is not None and fr.comment:
                state += " · comment"
            rows.append([
                _Item(f.id, int(f.id[1:])), _Item(f"{f.side or '?'} / {f.lobe or '?'}"),
                _Item(f"{f.diameter_mm:.1f} / {short:.1f}" if short is not None else f"{f.diameter_mm:.1f} / —",
                      f.diameter_mm),
                _Item(f"{f.mean_diameter_mm:.1f}", f.mean_diameter_mm), _Item(f"{f.volume_mm3:.0f}", f.volume_mm3),
                _Item(f.texture + (", calcified" if f.calcified else "")),
                _Item("—" if p is None else f"{p:.2f}{op}", -1.0 if p is None else p),
                _Item(lr), _Item("—" if f.consistency is None else f"{f.consistency:.2f}",
                                 -1.0 if f.consistency is None else f.consistency),
                _Item(state),
            ])
        for r in (review.added_findings if review is not None else []):
            rows.append([_Item(r.id, 1000 + int(r.id[1:])), _Item("reader's mark"),
                         _Item("—" if r.diameter_mm is None else f"{r.diameter_mm:.1f} / —", r.diameter_mm or 0.0),
                         _Item("—", 0.0), _Item("—", 0.0), _Item("—"), _Item("—", -1.0), _Item(r.category or "—"),
                         _Item("—", -1.0), _Item("added by reader" + (" · comment" if r.comment else ""))])
        self.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, item in enumerate(row):
                self.setItem(i, j, item)
        head = self.horizontalHeaderItem(6)
        if threshold is not None and head is not None:
            head.setToolTip(f"calibrated malignancy probability; op. = the operating "
                                                    f"point {threshold:.2f} (fusion decision threshold, val split)")
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()
        self.blockSignals(False)

    def select_id(self, fid: str | None) -> None:
        """Select the row of ``fid`` without emitting ``finding_selected``."""
        self.blockSignals(True)
        self.clearSelection()
        for i in range(self.rowCount()):
            it = self.item(i, 0)
            if it is not None and it.text() == fid:
                self.selectRow(i)
                break
        self.blockSignals(False)

    def ids(self) -> list[str]:
        items = [self.item(i, 0) for i in range(self.rowCount())]
        return [it.text() for it in items if it is not None]

    def _selection(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            it = self.item(rows[0].row(), 0)
            if it is not None:
                self.finding_selected.emit(it.text())


class ColorBar(QWidget):
    """A horizontal colour bar with its meaning: 0 = none, 1 = the finding's strongest value."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lut = heat_lut()
        self._rgb = np.ascontiguousarray(np.repeat(lut[None, :, :], 2, axis=0))
        self._img = QImage(self._rgb.data, 256, 2, 3 * 256, QImage.Format.Format_RGB888)
        self.setFixedHeight(20 + QFontMetrics(self.font()).height())  # the bar and its end labels, never squeezed

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        fm = QFontMetrics(self.font())
        bar = QRectF(4, 2, self.width() - 8, 14)
        p.drawImage(bar, self._img)
        p.setPen(self.palette().color(self.foregroundRole()))
        y = bar.bottom() + fm.ascent() + 2
        p.drawText(int(bar.left()), int(y), "0 none")
        hi = "1 = finding's max"
        p.drawText(int(bar.right() - fm.horizontalAdvance(hi)), int(y), hi)
        p.end()


def _swatch(rgb: tuple[int, int, int], text: str) -> QLabel:
    lab = QLabel(f'<span style="color: rgb{rgb}; font-weight: bold">■</span> {text}')
    lab.setTextFormat(Qt.TextFormat.RichText)
    return lab


class OverlayPanel(QGroupBox):
    """Toggles, legend, heatmap kind, opacity and colour bar.  ``changed`` after any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Overlays", parent)
        lay = QVBoxLayout(self)
        self.boxes = QCheckBox("findings (boxes with ids)  [B]")
        self.masks = QCheckBox("nodule masks (outline)  [M]")
        self.heat = QCheckBox("heatmap  [H]")
        self.boxes.setChecked(True)
        self.masks.setChecked(True)
        legend = QHBoxLayout()
        for rgb, text in ((BOX_RGB, "AI finding"), (SELECTED_RGB, "selected"), (READER_RGB, "reader's"),
                          (MASK_RGB, "mask")):
            legend.addWidget(_swatch(rgb, text))
        legend.addStretch(1)
        lay.addWidget(self.boxes)
        lay.addLayout(legend)
        lay.addWidget(self.masks)
        lay.addWidget(self.heat)
        form = QFormLayout()
        self.kind = QComboBox()
        for k, label in HEATMAP_KINDS.items():
            self.kind.addItem(label, k)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.setToolTip("heatmap opacity (%)")
        form.addRow("map", self.kind)
        form.addRow("opacity", self.opacity)
        lay.addLayout(form)
        self.colorbar = ColorBar()
        lay.addWidget(self.colorbar)
        # the caption wraps in a label below the bar (drawn in the bar it was cut off at the panel's width)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)
        for w in (self.boxes, self.masks, self.heat):
            w.toggled.connect(self._changed)
        self.kind.currentIndexChanged.connect(self._changed)
        self.opacity.valueChanged.connect(self._changed)
        self._changed()

    def _changed(self) -> None:
        kind = self.kind.currentData()
        # never greyed out (grey on grey was unreadable): the caption says when the map is off
        off = "" if self.heat.isChecked() else " (heatmap off: H shows it)"
        self.caption.setText(f"{HEATMAP_KINDS.get(kind, kind)}: magnitude, relative to each finding's maximum{off}")
        self.colorbar.update()
        self.changed.emit()

    def apply(self, scene: Any) -> None:
        """Copy the controls into a :class:`Scene`."""
        scene.show = {"findings": self.boxes.isChecked(), "mask": self.masks.isChecked(),
                      "heatmap": self.heat.isChecked()}
        scene.heat_kind = self.kind.currentData()
        scene.opacity = self.opacity.value() / 100.0
