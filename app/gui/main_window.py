"""The LungFuse review window: viewer, findings, overlays, report, analysis and the reader's review.

Research software, NOT for diagnostic use.

The window shows the CT as soon as a :class:`LoadWorker` has read it, then runs (or loads) the
analysis in an :class:`AnalysisWorker` with the session's single :class:`ModelRegistry`, so the
models load once per session whatever the number of cases.  It renders a ``CaseResult`` and
holds no pipeline logic.  Results of cases opened without ``--result`` are kept in the cache
folder (``<cache>/gui/<hash of the CT and report paths>/result.json``), so that the reader's
review sidecar beside it is found again when the case is reopened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from lungfuse.app.gui.info_panels import AnalysisPanel, ReportPanel
from lungfuse.app.gui.panels import FindingsTable, OverlayPanel
from lungfuse.app.gui.render import PRESETS
from lungfuse.app.gui.review_panel import ReviewPanel
from lungfuse.app.gui.scene import Scene
from lungfuse.app.gui.viewer import ViewerPanel
from lungfuse.app.gui.workers import AnalysisWorker, LoadWorker, ResultLoadWorker

__all__ = ["MainWindow", "NOT_FOR_DIAGNOSTIC_USE", "default_result_path"]

NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
SHORTCUTS = [
    ("Ctrl+O", "open a DICOM folder"), ("Ctrl+Shift+O", "open a NIfTI file or a saved result"),
    ("F5", "analyse (again)"), ("Esc", "cancel the running analysis"),
    ("1 / 2 / 3", "window: lung W1500/L-600, mediastinum W400/L40, bone W2000/L500"),
    ("right drag", "window width (horizontal) and level (vertical)"),
    ("S", "slab: none -> MIP -> MinIP"), ("[ / ]", "slab thinner / thicker (5-20 mm)"),
    ("wheel, Up/Down, PgUp/PgDn", "previous / next slice of the view under the mouse (axial by keys)"),
    ("Ctrl+wheel", "zoom"), ("middle drag, Shift+left drag", "pan"), ("0", "reset zoom and pan"),
    ("B / M / H", "toggle finding boxes / nodule masks / heatmap"),
    ("N / P", "next / previous finding"), ("?", "this sheet"),
]


def default_result_path(ct_path: str, report: str | None) -> Path:
    """Where the GUI keeps the result of a case opened without ``--result`` (see the module docstring)."""
    from lungfuse.pipelines.core.resources import cache_dir

    key = hashlib.sha256(f"{Path(ct_path).resolve()}\0{Path(report).resolve() if report else ''}".encode())
    return cache_dir() / "gui" / key.hexdigest()[:16] / "result.json"


class MainWindow(QMainWindow):
    """One case at a time (see the module docstring).  ``result_ready`` fires after each analysis
    or loaded result is shown; ``case_loaded`` once the CT is on screen; ``failed`` with the
    dialog's message."""

    case_loaded = Signal()
    result_ready = Signal()
    failed = Signal(str)
    analysis_cancelled = Signal()

    def __init__(self, settings: Any = None, registry: Any = None, confirm_close: bool = True) -> None:
        super().__init__()
        from lungfuse.pipelines.analysis.case import AnalysisSettings
        from lungfuse.pipelines.inference.registry import ModelRegistry

        self.setWindowTitle(f"LungFuse review - research software, {NOT_FOR_DIAGNOSTIC_USE}")
        self.settings = settings or AnalysisSettings()
        self.registry = registry if registry is not None else ModelRegistry()  # once per session
        self.confirm_close = confirm_close
        self.qsettings = QSettings("LungFuse", "LungFuse")
        self.scene: Scene | None = None
        self.volume: Any = None
        self.result: Any = None
        self.result_path: Path | None = None
        self.ct_path: str | None = None
        self.report_path: str | None = None
        self.worker: Any = None
        self.last_error: str | None = None
        self.error_box: QMessageBox | None = None
        self._build()

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.viewer = ViewerPanel()
        self.table = FindingsTable()
        self.overlays = OverlayPanel()
        self.side_tabs = QTabWidget()
        self.review = ReviewPanel()
        self.side_tabs.addTab(self.review, "Review")
        self.report_panel = ReportPanel()
        self.analysis_panel = AnalysisPanel()
        self.side_tabs.addTab(self.report_panel, "Report")
        self.side_tabs.addTab(self.analysis_panel, "Analysis")
        self._pick_diameter: float | None = None
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.viewer)
        left.addWidget(self.table)
        left.setStretchFactor(0, 4)
        left.setStretchFactor(1, 1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 0, 0, 0)
        rl.addWidget(self.overlays)
        rl.addWidget(self.side_tabs, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        self.splitter = split
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(4, 4, 4, 0)
        tl.addLayout(self._toolbar())
        tl.addWidget(split, 1)
        self.setCentralWidget(top)
        self._status_bar()
        self._menus()
        self.viewer.hovered.connect(self._readout)
        self.viewer.changed.connect(self._viewer_changed)
        self.table.finding_selected.connect(self.select_finding)
        self.overlays.changed.connect(self._overlays_changed)
        self.review.changed.connect(self._review_changed)
        self.report_panel.finding_clicked.connect(self.select_finding)
        self.review.pick_requested.connect(self._start_pick)
        self.review.ai_visibility.connect(self._set_ai_visible)
        for v in self.viewer.views.values():
            v.clicked_voxel.connect(self._picked)

    def _toolbar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.open_btn = QPushButton("Open…")
        self.open_btn.clicked.connect(self.choose_folder)
        self.analyse_btn = QPushButton("Analyse")
        self.analyse_btn.setToolTip("run the analysis again (F5)")
        self.analyse_btn.clicked.connect(self.start_analysis)
        self.analyse_btn.setEnabled(False)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("stop the running analysis (Esc)")
        self.cancel_btn.clicked.connect(self.cancel_analysis)
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 9)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        self.progress.setMinimumWidth(220)
        self.preset = QComboBox()
        for name, (w, lv) in PRESETS.items():
            self.preset.addItem(f"{name} W{w:.0f}/L{lv:.0f}", name)
        self.preset.setToolTip("window presets (keys 1, 2, 3); right drag on a view sets any window")
        self.preset.activated.connect(lambda i: self.set_preset(self.preset.itemData(i)))
        self.slab_mode = QComboBox()
        for label, mode in (("slice", "none"), ("MIP slab", "mip"), ("MinIP slab", "minip")):
            self.slab_mode.addItem(label, mode)
        self.slab_mode.setToolTip("maximum / minimum intensity projection over a slab (key S)")
        self.slab_mode.currentIndexChanged.connect(self._slab_changed)
        self.slab = QSlider(Qt.Orientation.Horizontal)
        self.slab.setRange(5, 20)
        self.slab.setValue(10)
        self.slab.setFixedWidth(120)
        self.slab.setToolTip("slab thickness, 5-20 mm (keys [ and ])")
        self.slab.valueChanged.connect(self._slab_changed)
        self.slab_label = QLabel("10 mm")
        for widget in (self.open_btn, self.analyse_btn, self.cancel_btn, self.progress):
            bar.addWidget(widget)
        bar.addSpacing(16)
        bar.addWidget(QLabel("window"))
        bar.addWidget(self.preset)
        bar.addSpacing(16)
        bar.addWidget(self.slab_mode)
        bar.addWidget(self.slab)
        bar.addWidget(self.slab_label)
        bar.addStretch(1)
        return bar

    def _status_bar(self) -> None:
        sb = self.statusBar()
        self.readout = QLabel("")
        self.readout.setMinimumWidth(380)
        self.models_label = QLabel("models: not loaded yet")
        notice = QLabel(f"<b style='color:#d22'>{NOT_FOR_DIAGNOSTIC_USE}</b>")
        notice.setToolTip("LungFuse is research software: it must not be used for diagnosis")
        self.notice_label = notice
        sb.addWidget(self.readout, 1)
        sb.addPermanentWidget(self.models_label)
        sb.addPermanentWidget(notice)
        self._show_models_info()

    def _show_models_info(self) -> None:
        """Device and model hashes: from the result once there is one, else what the session will use."""
        import torch

        if self.result is not None:
            dev = self.result.device
            m = self.result.models
            parts = [f"{k} {v.get('sha256', '')[:8]}" for k, v in m.items() if isinstance(v, dict) and v.get("sha256")]
            ver = self.result.provenance.lungfuse_version
            self.models_label.setText(f"device {dev} · lungfuse {ver} · " + ", ".join(parts))
            self.models_label.setToolTip("\n".join(f"{k}: {v.get('file', '')} sha256 {v.get('sha256', '')}"
                                                   for k, v in m.items() if isinstance(v, dict)))
        else:
            dev = self.settings.device
            if dev == "auto":
                dev = "cuda" if torch.cuda.is_available() else "cpu"
            self.models_label.setText(f"device {dev} · models load with the first analysis")

    def _menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self._action(file, "Open DICOM folder…", "Ctrl+O", self.choose_folder)
        self._action(file, "Open NIfTI file or saved result…", "Ctrl+Shift+O", self.choose_file)
        file.addSeparator()
        self._action(file, "Quit", "Ctrl+Q", self.close)
        an = mb.addMenu("&Analysis")
        self._action(an, "Analyse again", "F5", self.start_analysis)
        self._action(an, "Cancel analysis", "Esc", self.cancel_analysis)
        view = mb.addMenu("&View")
        for key, name in (("1", "lung"), ("2", "mediastinum"), ("3", "bone")):
            w, lv = PRESETS[name]
            self._action(view, f"{name} window W{w:.0f} / L{lv:.0f}", key, lambda n=name: self.set_preset(n))
        self._action(view, "Slab: none / MIP / MinIP", "S", self._cycle_slab)
        self._action(view, "Thinner slab", "[", lambda: self.slab.setValue(self.slab.value() - 1))
        self._action(view, "Thicker slab", "]", lambda: self.slab.setValue(self.slab.value() + 1))
        self._action(view, "Toggle finding boxes", "B", self.overlays.boxes.toggle)
        self._action(view, "Toggle nodule masks", "M", self.overlays.masks.toggle)
        self._action(view, "Toggle heatmap", "H", self.overlays.heat.toggle)
        self._action(view, "Next slice", "Up", lambda: self._step(1))
        self._action(view, "Previous slice", "Down", lambda: self._step(-1))
        self._action(view, "Ten slices on", "PgUp", lambda: self._step(10))
        self._action(view, "Ten slices back", "PgDown", lambda: self._step(-10))
        self._action(view, "Next finding", "N", lambda: self._next_finding(1))
        self._action(view, "Previous finding", "P", lambda: self._next_finding(-1))
        self._action(view, "Reset zoom and pan", "0", self._reset_views)
        rev = mb.addMenu("&Review")
        self._action(rev, "Accept the selected finding", "A", lambda: self.review.decide("accepted"))
        self._action(rev, "Reject the selected finding", "R", lambda: self.review.decide("rejected"))
        self._action(rev, "Add a missed nodule (click its centre)", "Ctrl+M",
                     lambda: self._start_pick(float(self.review.diameter.value())))
        self._action(rev, "Second-reader mode on/off", "Ctrl+2", self.review.second_reader.toggle)
        export = mb.addMenu("&Export")
        export.setToolTipsVisible(True)
        for label in ("PDF report…", "DICOM SR + SEG + SC…", "JSON / CSV…"):
            a = export.addAction(label)
            a.setEnabled(False)
            a.setToolTip("export not built yet (issue 23)")
        self.export_menu = export
        helpm = mb.addMenu("&Help")
        self._action(helpm, "Keyboard shortcuts", "?", self.show_shortcuts)

    def _action(self, menu: Any, text: str, key: str, slot: Any) -> QAction:
        a = QAction(text, self)
        a.setShortcut(QKeySequence(key))
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.triggered.connect(lambda _checked=False: slot())
        menu.addAction(a)
        self.addAction(a)
        return a

    # -- opening ---------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", self._last_dir())
        if path:
            self.open_case(path)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a NIfTI file or a saved result", self._last_dir(),
                                              "CT or result (*.nii *.nii.gz *.dcm *.json);;All files (*)")
        if path.endswith(".json"):
            self.open_result(path)
        elif path:
            self.open_case(path)

    def _last_dir(self) -> str:
        return str(self.qsettings.value("last_dir", str(Path.home())))

    def open_result(self, json_path: str) -> None:
        """Open a saved result: its CT from ``identifiers.ct_path``, the result and its review."""
        import json

        try:
            d = json.loads(Path(json_path).read_text())
            ct = (d.get("identifiers") or {}).get("ct_path")
        except (OSError, ValueError) as exc:
            self.show_error(f"{json_path}: cannot read the result: {exc}")
            return
        if not ct:
            self.show_error(f"{json_path}: the result names no CT (de-identified?); open the CT with --result")
            return
        self.open_case(ct, result_path=json_path)

    def open_case(self, path: str, report: str | None = None, result_path: str | Path | None = None,
                  analyse: bool = True) -> None:
        """Show the CT at ``path`` (read in a worker), then the analysis: the saved result at
        ``result_path`` when it exists and matches the CT, else a new analysis saved there."""
        if self.busy():
            self.show_error(f"{path}: another case is still loading or being analysed; cancel it first")
            return
        self.ct_path, self.report_path = str(path), report
        self.result_path = Path(result_path) if result_path else default_result_path(str(path), report)
        self.result = None
        self._auto_analyse = analyse
        self.qsettings.setValue("last_dir", str(Path(path).parent))
        self._set_busy(True, "loading CT")
        w = LoadWorker(str(path), self)
        w.loaded.connect(self._ct_loaded)
        w.failed.connect(self._worker_failed)
        self._run(w)

    def _ct_loaded(self, vol: Any) -> None:
        self.volume = vol
        self.scene = Scene(vol.hu, vol.spacing, vol.affine, vol.direction)
        self.overlays.apply(self.scene)
        self._slab_changed()
        self.viewer.set_scene(self.scene)
        self.setWindowTitle(f"LungFuse review - {Path(self.ct_path or '').name} - {NOT_FOR_DIAGNOSTIC_USE}")
        self.case_loaded.emit()
        self._set_busy(False, "CT loaded")
        if self.result_path is not None and self.result_path.is_file() and self._matches_saved(self.result_path):
            self._set_busy(True, "loading the saved result")
            w = ResultLoadWorker(str(self.result_path), vol, self)
            w.finished_result.connect(self._result_arrived)
            w.failed.connect(self._worker_failed)
            self._run(w)
        elif self._auto_analyse:
            self.start_analysis()

    def _matches_saved(self, json_path: Path) -> bool:
        """A saved result is re-used only when it was made on these very slices (SOP UIDs in order)."""
        import json

        try:
            d = json.loads(json_path.read_text())
        except (OSError, ValueError):
            return False
        uids = (d.get("provenance") or {}).get("source_sop_instance_uids") or []
        return bool(uids) and list(uids) == list(self.volume.sop_instance_uids)

    # -- analysis --------------------------------------------------------------------------------
    def start_analysis(self) -> None:
        from lungfuse.pipelines.analysis.case import Case

        if self.volume is None or self.busy():
            return
        case = Case(self.ct_path or "", report=self.report_path)
        self._set_busy(True, "starting the analysis")
        w = AnalysisWorker(case, self.settings, self.registry, self.volume, self.result_path, self)
        w.progress.connect(self._progress)
        w.finished_result.connect(self._result_arrived)
        w.cancelled.connect(self._cancelled)
        w.failed.connect(self._worker_failed)
        self._run(w)

    def cancel_analysis(self) -> None:
        if isinstance(self.worker, AnalysisWorker) and self.worker.isRunning():
            self.worker.cancel()
            self.progress.setFormat("cancelling…")

    def _run(self, w: Any) -> None:
        self.worker = w
        w.finished.connect(lambda: self._thread_done(w))
        w.start()

    def _thread_done(self, w: Any) -> None:
        if self.worker is w:
            self.worker = None
            self.cancel_btn.setEnabled(False)
            self.analyse_btn.setEnabled(self.volume is not None)
            self.open_btn.setEnabled(True)
        w.deleteLater()

    def busy(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def _set_busy(self, on: bool, text: str) -> None:
        self.progress.setFormat(text)
        if not on:
            self.progress.setValue(0)
        self.cancel_btn.setEnabled(on)
        self.analyse_btn.setEnabled(not on and self.volume is not None)
        self.open_btn.setEnabled(not on)

    def _progress(self, stage: str, i: int, n: int) -> None:
        self.progress.setRange(0, n)
        self.progress.setValue(i)
        self.progress.setFormat(f"{stage} ({i}/{n})")

    def _cancelled(self) -> None:
        self._set_busy(False, "analysis cancelled")
        self.analysis_cancelled.emit()

    def _result_arrived(self, result: Any, overlays: Any) -> None:
        self.result = result
        if self.scene is not None:
            self.scene.clear_result()
            self.scene.set_overlays(overlays)
        self._set_busy(False, f"{result.status} · {len(result.findings)} finding(s)")
        self.progress.setValue(self.progress.maximum())
        self._show_models_info()
        self.review.set_result(result, self.result_path)
        self.report_panel.set_result(result)
        self._reader_marks()
        self.refresh_result_views()
        if result.findings:
            self.select_finding(self.top_finding_id())
        self.result_ready.emit()

    def refresh_result_views(self) -> None:
        """Re-fill everything that shows the result (after a result or a review change)."""
        review = self.result.review if self.result is not None else None
        ai = self.scene.ai_visible if self.scene is not None else True
        self.table.fill(self.result, review, ai)
        if self.scene is not None and self.scene.selected:
            self.table.select_id(self.scene.selected)
        self.viewer.sync()

    def top_finding_id(self) -> str | None:
        """The finding the window opens on: the highest malignancy probability (then detection score)."""
        if self.result is None or not self.result.findings:
            return None
        f = max(self.result.findings, key=lambda f: (f.malignancy_probability or 0.0, f.detection_score))
        return str(f.id)

    def select_finding(self, fid: str | None) -> None:
        """Select ``fid`` and move the three views to its centre."""
        if self.scene is None or fid is None:
            return
        target = next((f for f in self.scene.findings if f.id == fid), None)
        if target is None:
            return
        self.scene.selected = fid
        self.scene.move_to(target.center_voxel)
        self.table.select_id(fid)
        self.review.show_finding(fid)
        if self.result is not None:
            self.analysis_panel.set_result(self.result, fid)
        self.viewer.sync()

    def _next_finding(self, d: int) -> None:
        ids = self.table.ids()
        if not ids:
            return
        cur = self.scene.selected if self.scene is not None else None
        i = (ids.index(cur) + d) % len(ids) if cur in ids else 0
        self.select_finding(ids[i])

    # -- the reader's review ---------------------------------------------------------------------
    def _review_changed(self) -> None:
        self._reader_marks()
        self.refresh_result_views()

    def _reader_marks(self) -> None:
        """The reader's added findings (LPS mm in the sidecar) as boxes on the CT grid."""
        import numpy as np

        if self.scene is None:
            return
        rv = self.result.review if self.result is not None else None
        inv = np.linalg.inv(self.scene.affine)
        marks = []
        for r in (rv.added_findings if rv is not None else []):
            v = inv[:3, :3] @ np.asarray(r.center_lps_mm, float) + inv[:3, 3]
            marks.append((r.id, (float(v[0]), float(v[1]), float(v[2])), float(r.diameter_mm or 6.0)))
        self.scene.set_reader_findings(marks)

    def _start_pick(self, diameter_mm: float) -> None:
        if self.scene is None or self.result is None:
            return
        self._pick_diameter = diameter_mm
        self.viewer.set_pick_mode(True)
        self.progress.setFormat(f"click the missed nodule's centre ({diameter_mm:.0f} mm)")

    def _picked(self, z: float, y: float, x: float) -> None:
        if self._pick_diameter is None or self.scene is None:
            return
        self.viewer.set_pick_mode(False)
        lps = self.scene.lps((z, y, x))
        rid = self.review.add_reader_finding([float(c) for c in lps], self._pick_diameter)
        self._pick_diameter = None
        self.progress.setFormat(f"added {rid}")
        self.select_finding(rid)

    def _set_ai_visible(self, on: bool) -> None:
        if self.scene is not None:
            self.scene.ai_visible = on
            self.qsettings.setValue("second_reader", not on)
            self.refresh_result_views()

    # -- errors ----------------------------------------------------------------------------------
    def _worker_failed(self, message: str, tb: str) -> None:
        self._set_busy(False, "failed")
        self.show_error(message, tb)

    def show_error(self, message: str, details: str = "") -> None:
        """A dialog naming the file and what is wrong (window-modal, does not block the event loop)."""
        self.last_error = message
        box = QMessageBox(QMessageBox.Icon.Critical, "LungFuse", message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box
        self.failed.emit(message)

    # -- view controls ---------------------------------------------------------------------------
    def set_preset(self, name: str) -> None:
        if self.scene is not None:
            self.scene.window = PRESETS[name]
            self.preset.setCurrentIndex(list(PRESETS).index(name))
            self.viewer.sync()

    def _slab_changed(self) -> None:
        self.slab_label.setText(f"{self.slab.value()} mm")
        if self.scene is not None:
            self.scene.slab_mode = self.slab_mode.currentData()
            self.scene.slab_mm = float(self.slab.value())
            self.viewer.sync()

    def _cycle_slab(self) -> None:
        self.slab_mode.setCurrentIndex((self.slab_mode.currentIndex() + 1) % self.slab_mode.count())

    def _overlays_changed(self) -> None:
        if self.scene is not None:
            self.overlays.apply(self.scene)
            self.viewer.sync()

    def _step(self, n: int) -> None:
        if self.scene is not None:
            under = next((v for v in self.viewer.views.values() if v.underMouse()), self.viewer.views["axial"])
            under.step(n)

    def _reset_views(self) -> None:
        for v in self.viewer.views.values():
            v.reset_view()

    def _viewer_changed(self) -> None:
        if self.scene is not None:
            self._readout(*[float(c) for c in self.scene.cursor])

    def _readout(self, z: float, y: float, x: float) -> None:
        """Status bar: voxel (z, y, x), patient LPS (x, y, z) mm and HU under the mouse."""
        if self.scene is None:
            return
        v = (z, y, x)
        hu = self.scene.hu_at(v)
        lps = self.scene.lps(v)
        vox = ", ".join(str(int(round(c))) for c in v)
        hu_txt = "outside" if hu is None else f"{hu:.0f} HU"
        self.readout.setText(f"voxel z,y,x {vox} · LPS {lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f} mm · {hu_txt}")

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{k}</b></td><td>{t}</td></tr>" for k, t in SHORTCUTS)
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard shortcuts", f"<table>{rows}</table>",
                          QMessageBox.StandardButton.Close, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.open()
        self.shortcut_box = box

    # -- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.busy():
            if self.confirm_close:
                ans = QMessageBox.question(self, "LungFuse", "An analysis is running. Cancel it and quit?")
                if ans != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            self.stop_worker()
        event.accept()

    def stop_worker(self, timeout_ms: int = 60000) -> None:
        """Cancel the running work and wait for its thread to end (the loaders are short)."""
        w = self.worker
        if w is None:
            return
        if isinstance(w, AnalysisWorker):
            w.cancel()
        w.wait(timeout_ms)
        QTimer.singleShot(0, lambda: None)
