"""The review window's persistent settings (QSettings) and the Settings dialog.

Research software, NOT for diagnostic use.

Stored with ``QSettings`` in INI format under the organisation ``LungFuse`` and the application
``LungFuse`` (``~/.config/LungFuse/LungFuse.ini`` on Linux).  INI in the user scope is used on
every platform so that ``QSettings.setPath(IniFormat, UserScope, DIR)`` moves the whole store,
which is how the tests keep theirs in a temporary folder.  Keys:

``device`` (auto / cpu / cuda), ``presets/<name>`` (window width and level in HU),
``overlay_opacity`` (0..100 %), ``second_reader`` (bool), ``recent`` (paths, newest first),
``last_dir`` (the last folder a file dialog opened).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from lungfuse.app.gui.render import PRESETS

__all__ = ["AppSettings", "SettingsDialog", "ORG", "APP", "MAX_RECENT", "DEVICES"]

ORG = APP = "LungFuse"
MAX_RECENT = 12
DEVICES = ("auto", "cpu", "cuda")


def _as_bool(v: Any) -> bool:
    """QSettings INI files give booleans back as the strings 'true' / 'false'."""
    return v is True or str(v).lower() in ("true", "1", "yes")


class AppSettings:
    """Typed access to the stored settings (see the module docstring for the keys)."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG, APP)

    # -- analysis --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        d = str(self.q.value("device", "auto"))
        return d if d in DEVICES else "auto"

    @device.setter
    def device(self, value: str) -> None:
        if value not in DEVICES:
            raise ValueError(f"device {value!r} not in {DEVICES}")
        self.q.setValue("device", value)

    # -- display ---------------------------------------------------------------------------------
    def presets(self) -> dict[str, tuple[float, float]]:
        """Window presets name -> (width, level) HU: the stored ones over the defaults of ``render.PRESETS``."""
        out = {}
        for name, (w, lv) in PRESETS.items():
            try:
                sw = float(self.q.value(f"presets/{name}_width", w))  # type: ignore[arg-type]
                sl = float(self.q.value(f"presets/{name}_level", lv))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                sw, sl = w, lv  # a hand-edited INI with junk: the default, not a crash
            out[name] = (max(sw, 1.0), sl)
        return out

    def set_preset(self, name: str, width: float, level: float) -> None:
        if name not in PRESETS:
            raise ValueError(f"window preset {name!r} not in {tuple(PRESETS)}")
        self.q.setValue(f"presets/{name}_width", float(width))
        self.q.setValue(f"presets/{name}_level", float(level))

    @property
    def opacity(self) -> int:
        """Heatmap opacity in percent (0..100)."""
        try:
            return int(min(max(int(self.q.value("overlay_opacity", 45)), 0), 100))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return 45

    @opacity.setter
    def opacity(self, value: int) -> None:
        self.q.setValue("overlay_opacity", int(value))

    @property
    def second_reader(self) -> bool:
        return _as_bool(self.q.value("second_reader", False))

    @second_reader.setter
    def second_reader(self, on: bool) -> None:
        self.q.setValue("second_reader", bool(on))

    # -- files -----------------------------------------------------------------------------------
    def recent(self) -> list[str]:
        """Recently opened cases (DICOM folders, NIfTI files, results, audit folders), newest first."""
        v: Any = self.q.value("recent", [])
        items = [v] if isinstance(v, str) else list(v or [])  # INI gives one item back as a plain string
        return [str(p) for p in items if p][:MAX_RECENT]

    def add_recent(self, path: str) -> None:
        p = str(Path(path).resolve())
        self.q.setValue("recent", [p, *(r for r in self.recent() if r != p)][:MAX_RECENT])

    def clear_recent(self) -> None:
        self.q.setValue("recent", [])

    @property
    def last_dir(self) -> str:
        return str(self.q.value("last_dir", str(Path.home())))

    @last_dir.setter
    def last_dir(self, value: str) -> None:
        self.q.setValue("last_dir", value)

    def sync(self) -> None:
        self.q.sync()


class SettingsDialog(QDialog):
    """Edits :class:`AppSettings`: device, the three window presets, overlay opacity, second-reader
    mode.  Written only on OK (``accepted``)."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LungFuse settings")
        self.settings = settings
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(settings.device)
        self.device.setToolTip("where the next analysis runs (auto: CUDA when available)")
        form.addRow("device", self.device)
        self.preset_boxes: dict[str, tuple[QDoubleSpinBox, QDoubleSpinBox]] = {}
        for name, (w, lv) in settings.presets().items():
            ws, ls = QDoubleSpinBox(), QDoubleSpinBox()
            ws.setRange(1, 5000)
            ls.setRange(-2000, 3000)
            ws.setDecimals(0)
            ls.setDecimals(0)
            ws.setValue(w)
            ls.setValue(lv)
            ws.setSuffix(" HU")
            ls.setSuffix(" HU")
            row = QHBoxLayout()
            row.addWidget(QLabel("W"))
            row.addWidget(ws)
            row.addWidget(QLabel("L"))
            row.addWidget(ls)
            form.addRow(f"{name} window", row)
            self.preset_boxes[name] = (ws, ls)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(settings.opacity)
        self.opacity_label = QLabel(f"{settings.opacity} %")
        self.opacity.valueChanged.connect(lambda v: self.opacity_label.setText(f"{v} %"))
        orow = QHBoxLayout()
        orow.addWidget(self.opacity, 1)
        orow.addWidget(self.opacity_label)
        form.addRow("heatmap opacity", orow)
        self.second_reader = QComboBox()
        self.second_reader.addItems(["off", "on (AI marks hidden until asked)"])
        self.second_reader.setCurrentIndex(int(settings.second_reader))
        form.addRow("second-reader mode", self.second_reader)
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
                                   | QDialogButtonBox.StandardButton.RestoreDefaults)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        restore = buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults)
        restore.clicked.connect(self._defaults)
        lay.addWidget(buttons)

    def _defaults(self) -> None:
        for name, (w, lv) in PRESETS.items():
            ws, ls = self.preset_boxes[name]
            ws.setValue(w)
            ls.setValue(lv)
        self.opacity.setValue(45)
        self.device.setCurrentText("auto")
        self.second_reader.setCurrentIndex(0)

    def accept(self) -> None:
        s = self.settings
        s.device = self.device.currentText()
        for name, (ws, ls) in self.preset_boxes.items():
            s.set_preset(name, ws.value(), ls.value())
        s.opacity = self.opacity.value()
        s.second_reader = bool(self.second_reader.currentIndex())
        s.sync()
        super().accept()
