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

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
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
from lungfuse.app.gui.settings import AppSettings, SettingsDialog
from lungfuse.app.gui.shortcuts import MOUSE_GESTURES, ShortcutSheet, shortcut_rows
from lungfuse.app.gui.viewer import ViewerPanel
from lungfuse.app.gui.workers import AnalysisWorker, ExportWorker, LoadWorker, ResultLoadWorker, WarmupWorker
from lungfuse.app.gui.worklist import WorklistPanel, audit_cases, entry_kind, read_entry

__all__ = ["MainWindow", "NOT_FOR_DIAGNOSTIC_USE", "default_result_path", "EXPORT_ENTRIES", "MOUSE_GESTURES"]

NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
#: the Export menu: (label, shortcut, formats of ``export_case``)
EXPORT_ENTRIES = [("PDF report…", "Ctrl+Shift+P", ["pdf"]),
                  ("DICOM SR + SEG + SC…", "Ctrl+Shift+D", ["sr", "seg", "sc"]),
                  ("JSON / CSV…", "Ctrl+Shift+J", ["json", "csv"])]


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

    exported = Signal(object)  # ExportResult

    def __init__(self, settings: Any = None, registry: Any = None, confirm_close: bool = True,
                 prefs: AppSettings | None = None) -> None:
        super().__init__()
        from lungfuse.pipelines.analysis.case import AnalysisSettings
        from lungfuse.pipelines.inference.registry import ModelRegistry

        self.setWindowTitle(f"LungFuse review - research software, {NOT_FOR_DIAGNOSTIC_USE}")
        self.prefs = prefs or AppSettings()
        self.settings = settings or AnalysisSettings()
        if self.settings.device == "auto":  # the stored device unless the command line named one
            self.settings = dataclasses.replace(self.settings, device=self.prefs.device)
        self.presets = self.prefs.presets()
        self.registry = registry if registry is not None else ModelRegistry()  # once per session
        self.confirm_close = confirm_close
        self.series: list[Any] = []
        self.series_uid: str | None = None
        self.export_worker: ExportWorker | None = None
        self.last_export: Any = None
        self._recent_path = ""
        self.warmup_worker: WarmupWorker | None = None
        self.warm = False
        self._saved_only = False
        self._auto_analyse = True
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
        self.worklist = WorklistPanel()
        self.side_tabs.addTab(self.worklist, "Worklist")
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
        self.worklist.open_requested.connect(self.open_path)
        self.worklist.audit_requested.connect(self.choose_audit)
        self.overlays.opacity.setValue(self.prefs.opacity)
        self.overlays.opacity.valueChanged.connect(lambda v: setattr(self.prefs, "opacity", v))
        self.review.second_reader.setChecked(self.prefs.second_reader)
        self.review.second_reader.toggled.connect(lambda on: setattr(self.prefs, "second_reader", on))
        self.setAcceptDrops(True)
        self.refresh_recent()

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
        self._fill_presets()
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
        # the series chooser: shown only when the folder holds several image stacks
        self.series_box = QComboBox()
        self.series_box.setToolTip("the series of this folder (localizers are never the default)")
        self.series_box.activated.connect(self._series_chosen)
        self.series_box.setVisible(False)
        self.series_box.setMaximumWidth(320)
        for widget in (self.open_btn, self.analyse_btn, self.cancel_btn, self.progress, self.series_box):
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
        """Device and model hashes: from the result once there is one, else what the session will use
        (torch is not imported here: 3-4 s on the GUI thread before the window could show)."""
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
                dev = "auto (CUDA when available)"
            self.models_label.setText(f"device {dev} · models load with the first analysis")

    def warm_up(self) -> None:
        """Import the analysis code and load the models in the background (see :class:`WarmupWorker`)."""
        if self.warmup_worker is not None:
            return
        w = WarmupWorker(self.registry, self.settings.device, self)
        w.ready.connect(self._warmed)
        w.failed.connect(lambda msg, _tb: self.models_label.setText(f"models: {msg}"))
        self.warmup_worker = w
        w.start()

    def _warmed(self, text: str) -> None:
        self.warm = True
        if self.result is None:
            self.models_label.setText(text)

    def _menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self._action(file, "Open DICOM folder…", "Ctrl+O", self.choose_folder)
        self._action(file, "Open NIfTI file or saved result…", "Ctrl+Shift+O", self.choose_file)
        self._action(file, "Open batch audit folder…", "Ctrl+Shift+A", self.choose_audit)
        self._action(file, "Worklist (recent cases, audit)", "Ctrl+L", self.show_worklist)
        self._action(file, "Clear recent cases", "Ctrl+Shift+Del", self.clear_recent)
        file.addSeparator()
        self._action(file, "Settings…", "Ctrl+,", self.show_settings)
        self._action(file, "Quit", "Ctrl+Q", self.close)
        an = mb.addMenu("&Analysis")
        self._action(an, "Analyse again", "F5", self.start_analysis)
        self._action(an, "Cancel analysis", "Esc", self.cancel_analysis)
        view = mb.addMenu("&View")
        self.preset_actions = {}
        for key, name in (("1", "lung"), ("2", "mediastinum"), ("3", "bone")):
            w, lv = self.presets[name]
            self.preset_actions[name] = self._action(view, f"{name} window W{w:.0f} / L{lv:.0f}", key,
                                                     lambda n=name: self.set_preset(n))
        self._action(view, "Slab: none / MIP / MinIP", "S", self._cycle_slab)
        self._action(view, "Thinner slab", "[", lambda: self.slab.setValue(self.slab.value() - 1))
        self._action(view, "Thicker slab", "]", lambda: self.slab.setValue(self.slab.value() + 1))
        self._action(view, "Toggle finding boxes", "B", self.overlays.boxes.toggle)
        self._action(view, "Toggle nodule masks", "M", self.overlays.masks.toggle)
        self._action(view, "Toggle heatmap", "H", self.overlays.heat.toggle)
        self._action(view, "Heatmap: detector / Grad-CAM", "G",
                     lambda: self.overlays.kind.setCurrentIndex((self.overlays.kind.currentIndex() + 1)
                                                                % self.overlays.kind.count()))
        self._action(view, "Heatmap more opaque", "Shift+H", lambda: self.overlays.opacity.setValue(
            self.overlays.opacity.value() + 10))
        self._action(view, "Heatmap more transparent", "Ctrl+H", lambda: self.overlays.opacity.setValue(
            self.overlays.opacity.value() - 10))
        self._action(view, "Next slice", "Up", lambda: self._step(1))
        self._action(view, "Previous slice", "Down", lambda: self._step(-1))
        self._action(view, "Ten slices on", "PgUp", lambda: self._step(10))
        self._action(view, "Ten slices back", "PgDown", lambda: self._step(-10))
        self._action(view, "Next finding", "N", lambda: self._next_finding(1))
        self._action(view, "Previous finding", "P", lambda: self._next_finding(-1))
        self._action(view, "Reset zoom and pan", "0", self._reset_views)
        self._action(view, "Zoom in", "Ctrl+=", lambda: self._zoom(1.25))
        self._action(view, "Zoom out", "Ctrl+-", lambda: self._zoom(0.8))
        self._action(view, "Findings table", "Ctrl+T", self.table.setFocus)
        for i, name in enumerate(("Worklist", "Review", "Report", "Analysis"), start=1):
            self._action(view, f"{name} tab", f"Alt+{i}", lambda i=i: self.side_tabs.setCurrentIndex(i - 1))
        rev = mb.addMenu("&Review")
        self._action(rev, "Accept the selected finding", "A", lambda: self.review.decide("accepted"))
        self._action(rev, "Reject the selected finding", "R", lambda: self.review.decide("rejected"))
        self._action(rev, "Edit category and comment", "C", self._edit_review)
        self._action(rev, "Add a missed nodule (click its centre)", "Ctrl+M",
                     lambda: self._start_pick(float(self.review.diameter.value())))
        self._action(rev, "Second-reader mode on/off", "Ctrl+2", self.review.second_reader.toggle)
        self._action(rev, "Show AI marks (second reader)", "Ctrl+3", self.review.show_ai.click)
        export = mb.addMenu("&Export")
        export.setToolTipsVisible(True)
        self.export_actions: dict[str, QAction] = {}
        for label, key, fmts in EXPORT_ENTRIES:
            self.export_actions[label] = self._action(export, label, key, lambda f=fmts: self.choose_export(f))
        self.export_menu = export
        self._update_export_actions()
        helpm = mb.addMenu("&Help")
        a = self._action(helpm, "Keyboard shortcuts", "?", self.show_shortcuts)
        a.setShortcuts([QKeySequence("?"), QKeySequence("F1")])

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
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", self.prefs.last_dir)
        if path:
            self.open_path(path)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a NIfTI file or a saved result", self.prefs.last_dir,
                                              "CT or result (*.nii *.nii.gz *.dcm *.json);;All files (*)")
        if path:
            self.open_path(path)

    def choose_audit(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a batch audit folder (summary.csv, cases/)",
                                                self.prefs.last_dir)
        if path:
            self.open_audit(path)

    def open_path(self, path: str) -> None:
        """Open whatever ``path`` is (menu, worklist, drop): an audit folder goes to the worklist,
        a ``.json`` is a saved result, anything else a CT (DICOM folder or file, NIfTI)."""
        kind = entry_kind(path)
        if not Path(path).exists():
            self.show_error(f"{path}: no such file or folder")
        elif kind == "audit":
            self.open_audit(path)
        elif kind == "result":
            self.open_result(path)
        else:
            self.open_case(path)

    def open_audit(self, audit_dir: str) -> None:
        """List a batch audit's cases (``DIR/cases/*/result.json``) with their status in the worklist."""
        cases = audit_cases(audit_dir)
        if not cases:
            self.show_error(f"{audit_dir}: not a batch audit folder (no cases/<case_id>/result.json inside)")
            return
        self.worklist.set_audit(audit_dir, cases)
        self.prefs.add_recent(audit_dir)
        self.prefs.last_dir = str(Path(audit_dir).parent)
        self.refresh_recent()
        self.show_worklist()

    def refresh_recent(self) -> None:
        self.worklist.set_recent([read_entry(p, lambda ct: default_result_path(ct, None))
                                  for p in self.prefs.recent()])

    def clear_recent(self) -> None:
        self.prefs.clear_recent()
        self.refresh_recent()

    def show_worklist(self) -> None:
        self.side_tabs.setCurrentWidget(self.worklist)
        self.worklist.tree.setFocus()

    def open_result(self, json_path: str) -> None:
        """Open a saved result: its CT from ``identifiers.ct_path``, the result and its review.
        The saved result is shown, never replaced: a CT that does not match it is an error."""
        import json

        try:
            d = json.loads(Path(json_path).read_text())
            ct = (d.get("identifiers") or {}).get("ct_path")
        except (OSError, ValueError) as exc:
            self.show_error(f"{json_path}: cannot read the result: {exc}")
            return
        if not isinstance(d, dict) or "status" not in d:
            self.show_error(f"{json_path}: not a LungFuse result (no 'status')")
            return
        if not ct:
            self.show_error(f"{json_path}: the result names no CT (de-identified?); open the CT with --result")
            return
        uid = (d.get("identifiers") or {}).get("series_instance_uid") or None
        self.open_case(ct, result_path=json_path, analyse=False, series_uid=uid, saved_only=True)

    def open_case(self, path: str, report: str | None = None, result_path: str | Path | None = None,
                  analyse: bool = True, series_uid: str | None = None, saved_only: bool = False) -> None:
        """Show the CT at ``path`` (read in a worker; series ``series_uid`` or the automatic
        choice), then the analysis: the saved result at ``result_path`` when it exists and matches
        the CT, else a new analysis saved there (``saved_only``: an error instead)."""
        if self.busy():
            self.show_error(f"{path}: another case is still loading or being analysed; cancel it first")
            return
        self.ct_path, self.report_path = str(path), report
        self.result_path = Path(result_path) if result_path else default_result_path(str(path), report)
        self.result = None
        self._update_export_actions()
        self.series_uid = series_uid
        self._auto_analyse = analyse
        self._saved_only = saved_only
        # the worklist remembers the result when one was named (its status is then readable), else the CT
        self._recent_path = str(result_path) if result_path else str(path)
        self.prefs.last_dir = str(Path(path).parent)
        self._set_busy(True, "loading CT")
        w = LoadWorker(str(path), series_uid, self)
        w.loaded.connect(self._ct_loaded)
        w.failed.connect(self._worker_failed)
        self._run(w)

    def _series_chosen(self, index: int) -> None:
        uid = self.series_box.itemData(index)
        if uid and uid != self.series_uid and self.ct_path:
            self.open_case(self.ct_path, report=self.report_path, series_uid=uid,
                           result_path=default_result_path(f"{self.ct_path}#{uid}", self.report_path))

    def _fill_series(self, vol: Any, series: list[Any]) -> None:
        """The chooser lists the folder's CT stacks (localizers too, never selected by default; not the
        SEG, SR or other objects beside them, which are no CT); the one shown is selected."""
        self.series = [si for si in series if si.modality == "CT"]
        self.series_box.blockSignals(True)
        self.series_box.clear()
        for si in self.series:
            scout = ", localizer" if si.is_localizer else ""
            desc = si.description or f"series …{si.series_uid[-6:]}"
            self.series_box.addItem(f"{desc}: {si.n_images} images {si.orientation}{scout}", si.series_uid)
            if si.series_uid == vol.series_instance_uid:
                self.series_box.setCurrentIndex(self.series_box.count() - 1)
        self.series_box.blockSignals(False)
        self.series_box.setVisible(len(self.series) > 1)

    def _ct_loaded(self, vol: Any, series: list[Any]) -> None:
        try:
            self._show_ct(vol, series)
        except Exception as exc:  # noqa: BLE001 - a slot that raises would leave the window waiting forever
            import traceback

            from lungfuse.app.gui.workers import describe_error

            self._worker_failed(describe_error(exc, self.ct_path), traceback.format_exc())

    def _show_ct(self, vol: Any, series: list[Any]) -> None:
        self.volume = vol
        self._fill_series(vol, series)
        self.scene = Scene(vol.hu, vol.spacing, vol.affine, vol.direction)
        self.scene.window = self.presets["lung"]
        self.scene.ai_visible = not self.review.second_reader.isChecked()
        self.review.show_ai.setEnabled(not self.scene.ai_visible)
        self.overlays.apply(self.scene)
        self._slab_changed()
        self.viewer.set_scene(self.scene)
        self.setWindowTitle(f"LungFuse review - {Path(self.ct_path or '').name} - {NOT_FOR_DIAGNOSTIC_USE}")
        self.case_loaded.emit()
        if not self._recent_path.endswith(".json") or Path(self._recent_path).is_file():
            self.prefs.add_recent(self._recent_path)
            self.refresh_recent()
        self._set_busy(False, "CT loaded")
        # the worker that loaded the CT is still finishing: the next one starts from the event loop
        QTimer.singleShot(0, self._after_ct)

    def _after_ct(self) -> None:
        if isinstance(self.worker, LoadWorker):
            self.worker.wait(10000)  # it has emitted its volume and is returning
        if self.result_path is not None and self.result_path.is_file() and self._matches_saved(self.result_path):
            self._set_busy(True, "loading the saved result")
            w = ResultLoadWorker(str(self.result_path), self.volume, self)
            w.finished_result.connect(self._result_arrived)
            w.failed.connect(self._worker_failed)
            self._run(w)
        elif self._saved_only:
            self.show_error(f"{self.result_path}: this result was not made on the CT it names ({self.ct_path}: "
                            "other slices); it is not shown. Analyse the CT again with F5.")
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
        # a series chosen by hand is analysed as loaded (the path alone would give the automatic choice)
        ct = self.volume if self.series_uid else (self.ct_path or "")
        case = Case(ct, report=self.report_path)
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
        self._update_export_actions()
        if self._recent_path:
            self.prefs.add_recent(self._recent_path)  # now with its status
        self.refresh_recent()
        if self.side_tabs.currentWidget() is self.worklist:
            self.side_tabs.setCurrentWidget(self.review)
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
            self.scene.window = self.presets[name]
            self.preset.setCurrentIndex(list(PRESETS).index(name))
            self.viewer.sync()

    def _fill_presets(self) -> None:
        self.preset.clear()
        for name, (w, lv) in self.presets.items():
            self.preset.addItem(f"{name} W{w:.0f}/L{lv:.0f}", name)

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

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """(menu, action, shortcut(s)) of every menu action, then the mouse gestures."""
        return shortcut_rows(self.menuBar())

    def show_shortcuts(self) -> None:
        """The keyboard shortcut sheet (``?`` or F1): a table of every action and its keys."""
        dlg = ShortcutSheet(self.shortcut_rows(), self)
        dlg.open()
        self.shortcut_sheet = dlg
        self.shortcut_table = dlg.table

    def show_settings(self) -> None:
        """The Settings dialog; on OK the window applies what changed (presets, opacity, device)."""
        dlg = SettingsDialog(self.prefs, self)
        dlg.accepted.connect(self.apply_settings)
        dlg.open()
        self.settings_dialog = dlg

    def apply_settings(self) -> None:
        """Re-read the stored settings into the window (after the dialog's OK)."""
        self.presets = self.prefs.presets()
        cur = self.preset.currentData()
        self._fill_presets()
        if cur in self.presets:
            self.preset.setCurrentIndex(list(self.presets).index(cur))
        for name, a in self.preset_actions.items():
            w, lv = self.presets[name]
            a.setText(f"{name} window W{w:.0f} / L{lv:.0f}")
        if self.scene is not None and cur in self.presets:
            self.scene.window = self.presets[cur]
        self.overlays.opacity.setValue(self.prefs.opacity)
        self.review.second_reader.setChecked(self.prefs.second_reader)
        self.settings = dataclasses.replace(self.settings, device=self.prefs.device)
        self._show_models_info()
        self.viewer.sync()

    # -- export ----------------------------------------------------------------------------------
    @staticmethod
    def available_formats() -> set[str]:
        """The export formats this build has (``export.api.available_formats``: the registry's keys)."""
        from lungfuse.pipelines.export.api import available_formats

        return set(available_formats())

    def _update_export_actions(self) -> None:
        """Each Export entry is enabled when its formats are built and a result is shown; else
        disabled with a tooltip that says why (never hidden)."""
        have = self.available_formats()
        for label, _key, fmts in EXPORT_ENTRIES:
            a = self.export_actions[label]
            missing = [f for f in fmts if f not in have]
            if missing:
                a.setEnabled(False)
                a.setToolTip(f"not available in this build: no {', '.join(missing)} writer")
            elif self.result is None:
                a.setEnabled(False)
                a.setToolTip("open a case and let the analysis finish first")
            else:
                a.setEnabled(True)
                a.setToolTip(f"export_case(formats={fmts}) into a folder you choose; the review goes along")

    def choose_export(self, formats: list[str]) -> None:
        if self.result is None:
            return
        out = QFileDialog.getExistingDirectory(self, f"Export {', '.join(formats)} into a folder", self.prefs.last_dir)
        if out:
            self.export_to(out, formats)

    def export_to(self, out_dir: str, formats: list[str], deidentify: bool = False) -> None:
        """Write ``formats`` of the shown result (with its review) to ``out_dir`` in a worker."""
        if self.result is None:
            self.show_error(f"{out_dir}: nothing to export yet (no analysis result)")
            return
        if self.export_worker is not None and self.export_worker.isRunning():
            self.show_error(f"{out_dir}: an export is still running")
            return
        w = ExportWorker(self.result, out_dir, formats, self.volume, self.ct_path, deidentify, self)
        w.exported.connect(self._exported)
        w.failed.connect(self._worker_failed)
        self.export_worker = w  # kept (a child of the window) until the next export replaces it
        self.progress.setFormat(f"exporting {', '.join(formats)}…")
        w.start()

    def _exported(self, res: Any) -> None:
        self.last_export = res
        n = sum(len(v) for v in res.files.values())
        self.progress.setFormat(f"exported {n} file(s)")
        self.statusBar().showMessage(f"exported {n} file(s): " + ", ".join(
            p.name for v in res.files.values() for p in v), 10000)
        self.exported.emit(res)

    # -- drag and drop ---------------------------------------------------------------------------
    def dragEnterEvent(self, e: QDragEnterEvent) -> None:  # noqa: N802
        if e.mimeData().hasUrls() and any(u.isLocalFile() for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            e.acceptProposedAction()
            self.open_path(paths[0])

    def _zoom(self, f: float) -> None:
        for v in self.viewer.views.values():
            v.zoom = float(min(max(v.zoom * f, 0.5), 16.0))
            v.update()

    def _edit_review(self) -> None:
        self.side_tabs.setCurrentWidget(self.review)
        self.review.comment.setFocus()

    # -- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.busy():
            if self.confirm_close:
                ans = QMessageBox.question(self, "LungFuse", "An analysis is running. Cancel it and quit?")
                if ans != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
        self.stop_worker()  # also the warm-up and an export: no thread may outlive the window
        event.accept()

    def stop_worker(self, timeout_ms: int = 60000) -> None:
        """Cancel the running work and wait for its thread to end (the loaders are short)."""
        for other in (self.warmup_worker, self.export_worker):
            if other is not None and other.isRunning():
                other.wait(timeout_ms)  # neither can be interrupted; both end on their own
        w = self.worker
        if w is None:
            return
        if isinstance(w, AnalysisWorker):
            w.cancel()
        w.wait(timeout_ms)
        QTimer.singleShot(0, lambda: None)
